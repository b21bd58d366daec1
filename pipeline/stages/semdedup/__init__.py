"""Embedding near-duplicate removal (SemDeDup-style).

Python API: `run_semdedup(input, out, SemdedupConfig(...))` (stage.py); CLI: `distill semdedup` (cli.py).
The embedders, the embedding cache and the stored vectors are `pipeline.embeddings`'. Importing this
package loads no model and no torch.
"""

from .config import SemdedupConfig
from .stage import run_semdedup

__all__ = ["SemdedupConfig", "run_semdedup"]
