import pytest

from pipeline.assets import data_dir, prompts_dir
from pipeline.prompts import (
    Template,
    TemplateError,
    all_templates,
    load_catalog,
    load_template,
)


def test_strict_render_names_every_missing_variable():
    t = Template("t", "Hello {{ name }}, rewrite {{prompt}} as {{ format }}. JSON stays: {\"a\": 1}")
    assert t.variables == {"name", "prompt", "format"}
    with pytest.raises(TemplateError) as e:
        t.render(name="x")
    assert "missing variables ['format', 'prompt']" in str(e.value)
    with pytest.raises(TemplateError, match=r"unknown variables \['typo'\]"):
        t.render(name="a", prompt="b", format="c", typo="d")
    assert t.render(name="a", prompt="b", format="c") == 'Hello a, rewrite b as c. JSON stays: {"a": 1}'


def test_every_shipped_template_renders():
    names = all_templates()
    for name in names:
        t = load_template(name)
        out = t.render(**{v: f"<{v}>" for v in t.variables})
        assert "{{" not in out, name
        assert len(t.hash) == 16


def test_every_shipped_catalog_parses():
    for path in prompts_dir().rglob("*.toml"):
        assert load_catalog(str(path.relative_to(prompts_dir()))), path


def test_missing_template_is_named():
    with pytest.raises(TemplateError, match="no/such.txt"):
        load_template("no/such.txt")


def test_assets_found():
    assert prompts_dir().is_dir() and data_dir().is_dir()
