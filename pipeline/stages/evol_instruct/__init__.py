"""Evol-Instruct (WizardLM): evolve instructions over rounds with in-depth and in-breadth operations.

Reads an instruction dataset; writes the input rows plus every accepted
evolution (origin `evol:<operation>`, `parent_id`, `root_id`, `round`), every
failed evolution in `rejected/` with its reason, and the per-round folders
under `_rounds/` that make a killed run resumable. See `stage.py` for the
flow, `eliminate.py` for the rules, `prompts/evol/` for the templates.
"""

from .config import OPERATIONS, EvolConfig
from .lineage import evolution_chain, format_chain
from .stage import run_evol_instruct

__all__ = ["OPERATIONS", "EvolConfig", "evolution_chain", "format_chain", "run_evol_instruct"]
