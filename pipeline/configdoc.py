"""Config as text: the commented starter file, the resolved config, the field reference.

All three are generated from the pydantic models (field types, defaults and
descriptions), so the documentation cannot drift from what is validated.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from .config import Config, RunSection, TeacherSection


def section_models() -> list[tuple[str, type[BaseModel]]]:
    """(section name, model) for run, teacher and every stage of the default plan."""
    from .plan import default_plan

    out: list[tuple[str, type[BaseModel]]] = [("run", RunSection), ("teacher", TeacherSection)]
    seen = {"run", "teacher"}
    for step in default_plan():
        if step.config_model is not None and step.section not in seen:
            out.append((step.section, step.config_model))
            seen.add(step.section)
    return out


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, BaseModel):
        return toml_value(value.model_dump(mode="json"))
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _type_name(field) -> str:
    ann = field.annotation
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def render_section(name: str, model: type[BaseModel], values: BaseModel | None, commented: bool) -> str:
    lines = [f"[{name}]"]
    for fname, field in model.model_fields.items():
        value = getattr(values, fname) if values is not None else field.get_default(call_default_factory=True)
        if field.description:
            lines.append(f"# {field.description}")
        if value is None:
            lines.append(f"# {fname} =   (unset)")
            continue
        line = f"{fname} = {toml_value(value)}"
        lines.append(f"# {line}" if commented else line)
    return "\n".join(lines)


def starter_toml() -> str:
    """A commented starter config: every field, its default and what it means."""
    head = ("# distill config: one section per stage. Every line is commented out and shows the default;\n"
            "# uncomment what you change. Unknown keys are errors. Reference: `distill config show --reference`.\n")
    return head + "\n\n".join(render_section(n, m, None, commented=True) for n, m in section_models()) + "\n"


def resolved_toml(cfg: Config) -> str:
    """The config as it will run: defaults filled in, file and flags applied."""
    from .config import stage_config

    parts = []
    for name, model in section_models():
        values = getattr(cfg, name) if name in ("run", "teacher") else stage_config(cfg, name, model)
        parts.append(render_section(name, model, values, commented=False))
    return f"# resolved from {cfg.source}\n" + "\n\n".join(parts) + "\n"


def reference_markdown() -> str:
    """The field-by-field reference table (README's config section is checked against it)."""
    out = []
    for name, model in section_models():
        out.append(f"### [{name}]\n\n| field | type | default | meaning |\n|---|---|---|---|")
        for fname, field in model.model_fields.items():
            default = field.get_default(call_default_factory=True)
            shown = "unset" if default is None else toml_value(default)
            out.append(f"| `{fname}` | `{_type_name(field)}` | `{shown}` | {field.description or ''} |")
        out.append("")
    return "\n".join(out)
