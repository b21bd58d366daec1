"""Config as text: the commented starter file, the resolved config, the field reference.

All three are generated from the pydantic models (field types, defaults and
descriptions), so the documentation cannot drift from what is validated.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel

from .config import Config, RunSection, TeacherSection, stage_config
from .plan import default_plan
from .refresh.config import RefreshConfig
from .stages.orca.verify.config import VerifyConfig


def section_models() -> list[tuple[str, type[BaseModel]]]:
    """(section name, model) for run, teacher, every stage of the default plan, verify and refresh."""

    out: list[tuple[str, type[BaseModel]]] = [("run", RunSection), ("teacher", TeacherSection)]
    seen = {"run", "teacher"}
    for step in default_plan():
        if step.config is not None and step.name not in seen:
            out.append((step.name, step.config))
            seen.add(step.name)
    out.append(("verify", VerifyConfig))  # `distill orca verify`: a stage outside the default plan
    out.append(("refresh", RefreshConfig))
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
    return _ann_name(field.annotation)


def _ann_name(ann: Any) -> str:

    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_ann_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_ann_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else getattr(origin, "__name__", str(origin))
    if ann is type(None):
        return "None"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return "table"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def _nested_model(field) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _reference_rows(model: type[BaseModel], prefix: str = "", defaults: BaseModel | None = None) -> list[str]:
    rows = []
    for fname, field in model.model_fields.items():
        # A nested table's defaults are the parent's default instance, not the nested class's own defaults.
        default = getattr(defaults, fname) if defaults is not None else field.get_default(call_default_factory=True)
        nested = _nested_model(field)
        if nested is not None and isinstance(default, BaseModel):  # one row per sub-field: every knob gets a line
            doc = field.description or (nested.__doc__ or "").strip().split("\n")[0]
            rows.append(f"| `{prefix}{fname}` | table | | {_cell(doc)} |")
            rows.extend(_reference_rows(nested, f"{prefix}{fname}.", default))
            continue
        shown = "unset" if default is None else toml_value(default)
        rows.append(f"| `{prefix}{fname}` | `{_cell(_type_name(field))}` | `{_cell(shown)}` | {_cell(_description(model, fname))} |")
    return rows


def _description(model: type[BaseModel], fname: str) -> str:
    """The field's description, or the one a base class gave it (a subclass that only changes a default keeps it)."""
    for klass in model.__mro__:
        fields = getattr(klass, "model_fields", None) or {}
        if fname in fields and fields[fname].description:
            return fields[fname].description
    return ""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


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
            "# uncomment what you change. Unknown keys are errors. Reference: `distill config reference`.\n")
    return head + "\n\n".join(render_section(n, m, None, commented=True) for n, m in section_models()) + "\n"


def resolved_toml(cfg: Config) -> str:
    """The config as it will run: defaults filled in, file and flags applied."""

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
        out.extend(_reference_rows(model))
        out.append("")
    return "\n".join(out)


BEGIN = "<!-- config-reference:begin (generated by `distill config reference --readme README.md`; do not edit) -->"
END = "<!-- config-reference:end -->"


def splice_reference(readme_text: str, reference: str) -> str:
    """`readme_text` with the part between the reference markers replaced by `reference`."""
    if BEGIN not in readme_text or END not in readme_text:
        raise ValueError("the file has no config-reference markers; add these two lines where the reference goes:\n"
                         f"{BEGIN}\n{END}")
    head, rest = readme_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{reference.rstrip()}\n\n{END}{tail}"
