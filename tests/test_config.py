import tomllib

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.configdoc import reference_markdown, resolved_toml, starter_toml


def test_defaults_are_the_embedded_teacher():
    cfg = load_config(None)
    assert cfg.teacher.backend == "llamacpp" and cfg.teacher.concurrency == 64
    assert cfg.run.shard_rows == 1000


def test_unknown_keys_and_bad_values_are_named(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[teacher]\nconcurency = 8\nbackend = 'gpt'\n[run]\nshard_rows = 0\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "teacher.concurency: Extra inputs are not permitted" in msg
    assert "teacher.backend" in msg and "run.shard_rows" in msg
    assert all(line.startswith(str(p)) for line in msg.splitlines())


def test_broken_toml_and_missing_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[run\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config init"):
        load_config(tmp_path / "absent.toml")


def test_overrides_win_over_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[run]\nseed = 5\nlimit = 10\n")
    cfg = load_config(p, {"run": {"seed": 9, "limit": None}})
    assert cfg.run.seed == 9 and cfg.run.limit == 10


def test_starter_and_resolved_configs_load_back(tmp_path):
    starter = tmp_path / "starter.toml"
    starter.write_text(starter_toml())
    assert load_config(starter).model_dump() == load_config(None).model_dump()
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(resolved_toml(load_config(None)))
    data = tomllib.loads(resolved.read_text())
    assert data["teacher"]["backend"] == "llamacpp"
    assert load_config(resolved).teacher == load_config(None).teacher
    assert "| `concurrency` |" in reference_markdown()


def test_readme_config_reference_matches_the_code():
    from pathlib import Path

    from pipeline.configdoc import reference_markdown, splice_reference

    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert splice_reference(text, reference_markdown()) == text, \
        "README's config reference is stale: run `distill config reference --readme README.md`"


def test_reference_splice_needs_markers_and_keeps_the_rest():
    import pytest

    from pipeline.configdoc import BEGIN, END, splice_reference

    with pytest.raises(ValueError, match="markers"):
        splice_reference("# no markers\n", "table")
    out = splice_reference(f"head\n{BEGIN}\nold\n{END}\ntail\n", "| new |")
    assert out == f"head\n{BEGIN}\n\n| new |\n\n{END}\ntail\n"


def test_nested_tables_show_the_parent_defaults():
    from pipeline.configdoc import reference_markdown

    ref = reference_markdown()
    # self_instruct's bootstrap sampling defaults are the paper's, not SamplingConfig's own
    assert "| `bootstrap.top_p` | `float` | `0.5` |" in ref and "| `bootstrap.presence_penalty` | `float` | `2.0` |" in ref


def test_demo_profile_is_valid_for_every_stage():
    from pipeline.assets import data_dir
    from pipeline.config import stage_config
    from pipeline.plan import default_plan

    cfg = load_config(data_dir() / "demo.toml")
    for step in default_plan():
        if step.config is not None:
            stage_config(cfg, step.name, step.config)  # raises ConfigError on a stale key
    assert cfg.self_instruct["num_instructions"] <= 20 and cfg.evol_instruct["rounds"] <= 2  # sized for minutes
