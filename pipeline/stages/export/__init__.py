"""Release export: SFT-ready Parquet shards, dataset card, checksummed manifest.

Python API: `run_export(input, out, ExportConfig(...))`; CLI: `distill export`.
"""

from .config import ExportConfig
from .stage import run_export

__all__ = ["ExportConfig", "run_export"]
