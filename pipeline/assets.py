"""Where the shipped `prompts/` and `data/` folders are, in a checkout or an installed wheel.

In a source checkout (or editable install) they sit next to the package; a
wheel carries them inside the package as `pipeline/_assets/` (see
pyproject.toml). Either way callers ask for `asset_dir("prompts")`.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def asset_dir(name: str) -> Path:
    for candidate in (_PKG / "_assets" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"the '{name}/' folder shipped with distill was not found next to {_PKG}; reinstall the package")


def prompts_dir() -> Path:
    return asset_dir("prompts")


def data_dir() -> Path:
    return asset_dir("data")
