"""Self-Instruct (Wang et al. 2023): grow new tasks from a seed pool with the teacher.

Reads a seed pool (the team's data/seed_tasks.jsonl by default); writes one
row per generated instance (origin `self_instruct`) with every dropped
candidate in `rejected/`. `stage.py` is the loop, `bootstrap.py` the prompt,
parser and filters, `rouge.py` the exact and fast ROUGE-L novelty filter,
`instances.py` classification and instance generation, `alpaca.py` the
Alpaca variant, `output.py` rows and resume, `seeds.py` seed files, `window.py`
the in-flight window of the default schedule.
"""

from .config import SelfInstructConfig
from .seeds import SeedPool, SeedTask, load_seeds
from .stage import run_self_instruct

__all__ = ["SeedPool", "SeedTask", "SelfInstructConfig", "load_seeds", "run_self_instruct"]
