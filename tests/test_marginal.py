"""The marginal-return curve on a pool whose novelty is known by construction, pushed through the real minhash stage."""

from __future__ import annotations

import json
import math

import numpy as np
from minhash_support import row, words, write_dataset

from pipeline import marginal
from pipeline.stages.minhash import MinhashConfig, run_minhash

SHARD = 100
DUP_SHARE = [0.0, 0.2, 0.5, 0.8]  # shard k: this share of its rows copies a row of an earlier shard


def pool_rows(seed=0):
    """Shards of SHARD rows; in shard k, DUP_SHARE[k] of them are exact or near copies of earlier rows."""
    rng = np.random.default_rng(seed)
    rows, texts = [], []
    for k, share in enumerate(DUP_SHARE):
        n_dup = int(share * SHARD)
        for i in range(SHARD):
            if i < n_dup:
                src = texts[int(rng.integers(0, len(texts)))].split()
                if i % 2:  # a near copy: one word changed of 80
                    src[int(rng.integers(0, len(src)))] = f"x{k}_{i}"
                text = " ".join(src)
            else:
                text = " ".join(words(rng, 80))
            texts.append(text) if i >= n_dup else None
            rows.append(row(f"task {k}-{i}", text, task_kind="open_qa" if i % 2 else "math"))
    return rows


def _pool(tmp_path, seed=0):
    src = write_dataset(tmp_path / "run" / "orca", pool_rows(seed), shard_rows=SHARD)
    run_minhash(src, tmp_path / "run" / "minhash", MinhashConfig(threshold=0.7, keep_by=["length"]), progress=False)
    return tmp_path / "run"


def test_the_curve_matches_the_duplicates_put_in_each_shard(tmp_path):
    pts = marginal.run_curve(_pool(tmp_path))
    assert [p["generated"] for p in pts] == [SHARD] * len(DUP_SHARE)
    assert [p["rows_generated"] for p in pts] == [SHARD * (k + 1) for k in range(len(DUP_SHARE))]
    assert [p["novel"] for p in pts] == [round(SHARD * (1 - s)) for s in DUP_SHARE]
    assert [p["novel_per_1k"] for p in pts] == [round(1000 * (1 - s), 1) for s in DUP_SHARE]
    # yield counts the shard's rows that minhash (the last stage here) kept: which copy it keeps is the keep
    # policy's choice, so only the total is known; novelty credits the first copy whichever was kept
    assert round(sum(p["yield"] * p["generated"] for p in pts)) == sum(p["novel"] for p in pts) == 250
    assert pts[0]["yield"] < 1
    assert pts[0]["entropy_task_kind"] == 1.0  # math and open_qa, half each


def test_the_trend_sentence_predicts_fewer_novel_rows_as_novelty_falls(tmp_path):
    pts = marginal.run_curve(_pool(tmp_path))
    f = marginal.fit(pts)
    assert f["b"] < 0
    text = marginal.sentence(pts)
    assert text.startswith("Novel rows per 1k generated went from 1000 to 200 over the last 400 rows")
    assert "next doubling (to 800 rows generated)" in text
    assert marginal.expected_novel(f, 400, 800) < 400 * 0.5  # fewer than the last shards' own novel rate


def test_refresh_nights_are_points_of_the_curve(tmp_path):
    for i, (gen, after) in enumerate([(1000, 800), (1000, 400), (2000, 200)]):
        (tmp_path / f"night{i}").mkdir()
        (tmp_path / f"night{i}" / "refresh_summary.json").write_text(json.dumps(
            {"run_id": f"night{i}", "finished_at": f"2026-01-0{i + 1}T00:00:00",
             "rows": {"generated": gen, "after_dedup": after, "added": after // 2}}))
    pts = marginal.refresh_curve(tmp_path)
    assert [p["point"] for p in pts] == ["night0", "night1", "night2"]
    assert [p["rows_generated"] for p in pts] == [1000, 2000, 4000]
    assert [p["novel_per_1k"] for p in pts] == [800, 400, 100]
    assert abs(marginal.fit(pts)["b"] - (-1.5)) < 1e-9  # least squares over log2: (0, 3), (1, 2), (2, 0)


def test_a_run_s_report_shows_the_marginal_return_section(tmp_path):
    from pipeline.report import build_report, write_report

    run = _pool(tmp_path)
    (run / "run_summary.json").write_text(json.dumps({"steps": [{"stage": "orca"}, {"stage": "minhash"}]}))
    rep = build_report(run)
    assert [p["novel"] for p in rep["marginal"]["shards"]] == [100, 80, 50, 20]
    page = write_report(run).read_text()
    section = page[page.index("Marginal return"):]
    assert "Novel rows per 1k generated went from 1000 to 200" in section
    for title in ("novel rows per 1k generated", "yield (kept / generated)", "diversity: entropy of task kinds"):
        assert f'aria-label="{title}' in section, title
    assert section.count("<polyline") == 4  # novel per 1k, yield, two entropies (no scores, no hard flags here)


def test_a_pilot_with_few_shards_is_cut_in_slices_for_the_projection(tmp_path):
    run = _pool(tmp_path)
    pts = marginal.run_curve(run, chunk_rows=80)
    # rows 0-99 new; shard k's first DUP_SHARE[k] * 100 rows copies: counted by hand per 80-row slice
    assert [p["novel_per_1k"] for p in pts] == [1000, 750, 500, 625, 250]
    pr = marginal.projection(run, {"target": 800, "1m": 1_000_000})
    assert pr["pilot_rows_generated"] == 400 and pr["pilot_novel_per_1k"] == 250 and pr["exponent"] < 0
    f = marginal.fit(pts)
    assert pr["novel_per_1k_at"]["1m"] == round(f["a"] * 1_000_000 ** f["b"], 1) < pr["novel_per_1k_at"]["target"] < 1000


def test_distill_plan_s_table_prints_the_expected_novelty_at_the_next_tier(tmp_path):
    from pipeline.costtable import table

    run = _pool(tmp_path)
    p = {"target_rows": 100_000, "pilot_rows": 400, "pilot_reused": True, "pilot_dir": str(run), "backend": "openai",
         "model": "m", "kept_rows": 4.0, "requests": 20.0, "prompt_tokens": 100.0, "completion_tokens": 50.0,
         "tokens": 150.0, "requests_per_kept_row": 5.0, "wall_seconds": 3.0, "rate_limit_floor_seconds": 0.0,
         "concurrency": 4, "cost": None, "stages": [],
         "novelty": marginal.projection(run, {"target": 100_000, "1m": 1_000_000, "10m": 10_000_000})}
    line = next(ln for ln in table(p).splitlines() if ln.startswith("novelty:"))
    at = p["novelty"]["novel_per_1k_at"]
    assert line == (f"novelty: the pilot's last rows added 250 novel rows per 1k generated; its trend expects "
                    f"{at['target']:g} at the target, {at['1m']:g} at 1m, {at['10m']:g} at 10m")


def test_a_refresh_night_s_report_shows_the_curve_over_the_nights_of_its_workdir(tmp_path):
    from pipeline.report import write_report
    from tests.test_report import _run

    run = _run(tmp_path)  # work/r1, with a minhash stage
    for name, gen, after in (("r0", 1000, 700), ("r1", 1000, 300)):
        (run.parent / name).mkdir(exist_ok=True)
        (run.parent / name / "refresh_summary.json").write_text(json.dumps(
            {"run_id": name, "finished_at": f"2026-01-0{name[1]}T01:00:00", "stages": [{"stage": "minhash"}],
             "rows": {"generated": gen, "after_dedup": after, "added": after}}))
    page = write_report(run).read_text()
    section = page[page.index("Per refresh night"):]
    assert "Novel rows per 1k generated went from 700 to 300 over the last 2,000 rows" in section
    assert section.count("<polyline") == 2  # novel per 1k and yield: what a night's summary records


def test_exact_copies_share_their_id_and_count_once_in_novelty_and_yield(tmp_path):
    rng = np.random.default_rng(1)
    rows = [row(f"task {i}", " ".join(words(rng, 60)), task_kind="math") for i in range(SHARD)]
    src = write_dataset(tmp_path / "run" / "orca", rows + [dict(r) for r in rows], shard_rows=SHARD)
    run_minhash(src, tmp_path / "run" / "minhash", MinhashConfig(), progress=False)
    pts = marginal.run_curve(tmp_path / "run")
    assert [(p["novel"], p["yield"]) for p in pts] == [(SHARD, 1.0), (0, 0.0)]
    assert pts[1]["entropy_task_kind"] == 0.0 and str(pts[1]["entropy_task_kind"]) == "0.0"


def test_mean_scores_and_the_hard_share_follow_each_shard_s_rows(tmp_path):
    from pipeline import records
    from pipeline.store import Dataset

    rows = pool_rows()
    for i, r in enumerate(rows):
        if i % 4 == 0:  # what `distill hard` records; a quarter of the rows judged, every other one of them hard
            records.set_meta(r, "hard", {"hard": i % 8 == 0, "gap": 1.0})
    src = write_dataset(tmp_path / "run" / "orca", rows, shard_rows=SHARD)
    run_minhash(src, tmp_path / "run" / "minhash", MinhashConfig(threshold=0.7), progress=False)
    kept = Dataset(tmp_path / "run" / "minhash").read().to_pylist()
    shard_of = {r["id"]: i // SHARD for i, r in enumerate(rows)}
    for r in kept:
        r["quality"], r["complexity"] = float(shard_of[r["id"]]), 2.0 * shard_of[r["id"]] + 1
    write_dataset(tmp_path / "run" / "score", kept, shard_rows=SHARD)
    pts = marginal.run_curve(tmp_path / "run")
    assert [p["quality"] for p in pts] == [0.0, 1.0, 2.0, 3.0]
    assert [p["complexity"] for p in pts] == [1.0, 3.0, 5.0, 7.0]
    assert [p["hard_share"] for p in pts] == [0.52, 0.48, 0.52, 0.48]  # of the 25 judged rows per shard


def test_the_trend_is_fitted_on_the_recent_half_of_the_curve():
    # flat at 1000 for four points, then exactly novel_per_1k = 8e6 / rows: a whole-curve fit would see
    # a far shallower slope and promise the next doubling many more novel rows
    rows = [1000, 2000, 3000, 4000, 8000, 16000, 32000, 64000]
    pts = [{"rows_generated": n, "novel_per_1k": 1000.0 if n <= 4000 else 8e6 / n, "generated": 1000} for n in rows]
    f = marginal.fit(pts)
    assert abs(f["b"] + 1) < 1e-9 and abs(f["a"] - 8e6) < 1e-3
    assert abs(marginal.expected_novel(f, 64000, 128000) - 8000 * math.log(2)) < 1e-6
