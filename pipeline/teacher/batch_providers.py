"""Which batch provider a `[teacher]` section names: openai_batch, anthropic_batch or batch_file.

`make_provider(section, folder)`: the provider object the batch teacher
(batch_backend.py) drives; `folder` is the journal folder, where file mode's
input and output files lie. Reads and writes nothing on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_provider(section: Any, folder: Path) -> Any:
    if section.backend == "openai_batch":
        from .batch_openai import OpenAIBatchProvider
        return OpenAIBatchProvider(section)
    if section.backend == "anthropic_batch":
        from .batch_anthropic import AnthropicBatchProvider
        return AnthropicBatchProvider(section)
    if section.backend == "batch_file":
        from .batch_file import FileBatchProvider
        return FileBatchProvider(section, folder)
    raise ValueError(f"not a batch backend: {section.backend!r}")
