"""Prompt templates under `prompts/`, rendered strictly.

A template is a plain text file with `{{ name }}` placeholders. Rendering
raises one `TemplateError` naming every missing variable (and every variable
passed that the template does not use, which is almost always a typo).
Literal braces need no escaping, so templates can show JSON or code.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .assets import prompts_dir
from .config import read_toml
from .errors import TemplateError

_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def variables(self) -> set[str]:
        return set(_VAR.findall(self.text))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:16]

    def render(self, **values: Any) -> str:
        missing = sorted(self.variables - values.keys())
        unused = sorted(values.keys() - self.variables)
        if missing or unused:
            parts = []
            if missing:
                parts.append(f"missing variables {missing}")
            if unused:
                parts.append(f"unknown variables {unused}")
            raise TemplateError(f"template '{self.name}': {'; '.join(parts)}")
        return _VAR.sub(lambda m: str(values[m.group(1)]), self.text)


@lru_cache(maxsize=None)
def _load(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_template(name: str, root: Path | None = None) -> Template:
    """`name` is a path under prompts/, e.g. 'evol/deepening.txt'."""
    base = root or prompts_dir()
    path = (base / name).resolve()
    if not path.is_file():
        raise TemplateError(f"template '{name}' not found under {base}")
    return Template(name=name, text=_load(str(path)))


def render(name: str, **values: Any) -> str:
    return load_template(name).render(**values)


def load_catalog(name: str, root: Path | None = None) -> dict[str, Any]:
    """A TOML catalog under prompts/ (system messages, strategies)."""
    base = root or prompts_dir()
    return read_toml(base / name, f"not found under {base}", error=TemplateError, label=f"catalog '{name}'")


def all_templates(root: Path | None = None) -> list[str]:
    base = root or prompts_dir()
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.txt"))
