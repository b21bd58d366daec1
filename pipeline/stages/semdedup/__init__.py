"""Embedding near-duplicate removal (SemDeDup-style), plus the embedders and diversity helpers other stages reuse.

Python API: `run_semdedup(input, out, SemdedupConfig(...))` (api.py); CLI: `distill semdedup` (cli.py).
Reusable: `embedder.load_embedder`, `neighbors.SelectedSet` / `greedy_diverse_select`,
`embstore.load_embeddings` (vectors stored next to a dataset). Importing this
package loads no model and no torch.
"""

from .config import SemdedupConfig


def run_semdedup(*args, **kwargs):
    from .api import run_semdedup as _run
    return _run(*args, **kwargs)


run_semdedup.__doc__ = "See pipeline.stages.semdedup.api.run_semdedup."

__all__ = ["SemdedupConfig", "run_semdedup"]
