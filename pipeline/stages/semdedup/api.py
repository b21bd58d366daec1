"""`run_semdedup`, where cli.py still imports it from (it lives in stage.py)."""

from .stage import run_semdedup

__all__ = ["run_semdedup"]
