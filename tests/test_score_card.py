"""The dataset card says what the scores are: Deita's scorers, a rubric judge, or a heuristic that is no quality score."""

from __future__ import annotations

from deita_standin import DeitaStandIn
from test_score_deita import COMPLEXITY_TOP, QUALITY_TOP, deita_cfg, scored_dataset

from pipeline.context import RunContext
from pipeline.stages.export.config import ExportConfig
from pipeline.stages.export.stage import run_export
from pipeline.stages.score.config import ScoreConfig
from pipeline.stages.score.stage import run_score


def _card(tmp_path, cfg: ScoreConfig, ctx: RunContext) -> str:
    run_score(scored_dataset(tmp_path / "in"), tmp_path / "scored", cfg, ctx)
    run_export(tmp_path / "scored", tmp_path / "rel", ExportConfig(), progress=False)
    return (tmp_path / "rel" / "README.md").read_text()


def test_card_of_a_heuristic_run_says_the_scores_are_not_quality_scores(tmp_path):
    card = _card(tmp_path, ScoreConfig(gates=["empty"], heuristic="length"), RunContext(run_id="c", progress=False))
    assert "Combined score source: **heuristic**" in card
    assert "These are not quality scores" in card and "length only" in card


def test_card_of_a_deita_run_names_deitas_scorers(tmp_path):
    with DeitaStandIn("hkust-nlp/deita-quality-scorer", lambda p: QUALITY_TOP) as q, \
            DeitaStandIn("hkust-nlp/deita-complexity-scorer", lambda p: COMPLEXITY_TOP) as c:
        card = _card(tmp_path, deita_cfg(q, c), RunContext(run_id="c", workdir=tmp_path / "w", progress=False))
    assert "Combined score source: **deita**" in card and "Deita's trained scorers" in card
    assert "hkust-nlp/deita-complexity-scorer" in card and "not quality scores" not in card
