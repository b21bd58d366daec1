"""The release's dataset card: README.md with the YAML header the Hugging Face Hub reads.

The header carries licence (with `license_name` and `license_link` for
`license: other`), language, task category, size category, the data-files
config per split and `dataset_info` as `datasets` writes it (hub_info.py); the body says what is in
the release (rows, files, sources, teachers, scores), how it was made (the
funnel of every upstream stage, read from their manifests) and how to load it.
Strings in the header are written as JSON strings, which YAML reads as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...lineage import upstream
from ...store import atomic_write_bytes, read_json
from ..hard.strata import share
from . import hub_info

_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]


def size_category(n: int) -> str:
    return next((label for limit, label in _SIZES if n < limit), "n>100M")


def upstream_chain(path: str | Path, max_depth: int = 20) -> list[dict[str, Any]]:
    """The stages that led to `path`, oldest first: name, rows in/out, drops, teacher, score source."""
    chain = []
    for _, m in upstream(path, max_depth):
        if not m:
            break
        chain.append({k: m.get(k) for k in ("stage", "rows_in", "rows_out", "rows_rejected", "drops", "teacher",
                                            "score_source", "heuristic", "judge_teacher", "system_message_erasure",
                                            "run_id")
                      if m.get(k) is not None})
        if m.get("stage") == "hard":  # the card's hard share (pipeline/stages/hard)
            chain[-1]["hard_share"] = share(m.get("totals") or {})
    return list(reversed(chain))


def pool_versions(path: str | Path) -> list[dict[str, Any]]:
    """For a refresh pool (its manifest lists parts with the version that added them): rows per version,
    oldest first; [] for any other dataset."""
    mf = Path(path) / "_manifest.json"
    parts = read_json(mf).get("parts") if mf.exists() else None
    if not parts or not any("added_in" in p for p in parts):
        return []
    rows: dict[str, int] = {}
    for p in parts:
        v = p.get("added_in") or "before versioning"
        rows[v] = rows.get(v, 0) + int(p.get("rows", 0))
    return [{"version": v, "rows_added": n} for v, n in rows.items()]


LICENSE_FILE = "LICENSE.md"
DEFAULT_LICENSE_NAME = "teacher-terms"


def license_fields(cfg) -> dict[str, str]:
    """`license_name` and `license_link` for `license: other` (the Hub reads them only then); {} otherwise."""
    if cfg.license != "other":
        return {}
    return {"license_name": cfg.license_name or DEFAULT_LICENSE_NAME, "license_link": cfg.license_link or LICENSE_FILE}


def _yaml_header(m: dict[str, Any], cfg, schema: pa.Schema) -> str:
    q = json.dumps
    lines = ["---", f"license: {q(cfg.license)}"] + [f"{k}: {q(v)}" for k, v in license_fields(cfg).items()]
    lines += [f"pretty_name: {q(m['pretty_name'])}", "language:"]
    lines += [f"- {q(lang)}" for lang in cfg.language]
    lines += ["task_categories:", "- text-generation", "tags:", "- synthetic", "- sft", "- distillation",
              "size_categories:", f"- {q(size_category(m['rows']))}",
              "configs:", "- config_name: default", "  data_files:"]
    for split in m["splits"]:
        lines += [f"  - split: {split}", f"    path: {q(split + '-*.parquet')}"]
    lines += hub_info.dataset_info(schema, m["files"], m["splits"])
    lines.append("---")
    return "\n".join(lines)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# What each score source means, in the card's words (pipeline/stages/score/config.py).
SCORE_SOURCES = {
    "deita": "Quality and complexity are Deita's trained scorers (hkust-nlp/deita-quality-scorer, "
             "deita-complexity-scorer) in their own prompt format, each the expected value over the 1-6 tokens "
             "at the first generated token; the combined score is their product, as in Deita.",
    "rubric": "Quality and complexity are zero-shot rubric ratings by a general judge model (the direct-scoring "
              "baseline Deita compares against), not Deita's trained scorers.",
    "heuristic": "These are not quality scores: no judge rated the rows (the embedded demo teacher cannot). "
                 "The score ranks by answer and prompt length times the answer's relevance to the request "
                 "(MiniLM similarity); the judge columns are empty.",
    "judge": "Quality and complexity are ratings by a judge model (an older run: zero-shot rubric prompts).",
}


_FORMATS = {
    "messages": ("Each row's `messages` column is a chat in the format TRL's `SFTTrainer` and `datasets` read as "
                 "they are (a list of `{role, content}`)."),
    "prompt_completion": ("Each row is in TRL's conversational prompt/completion format: `prompt` is the chat up to "
                          "the answer (system and user turns, as lists of `{role, content}`) and `completion` is "
                          "`[the assistant's answer]`. `SFTTrainer` computes the loss on the completion only "
                          "(`completion_only_loss`, on by default for this format), with no chat-template markers "
                          "needed."),
}


def render_card(m: dict[str, Any], cfg, schema: pa.Schema) -> str:
    name = m["pretty_name"]
    score_src = next((s.get("score_source") for s in reversed(m["upstream"]) if s.get("score_source")), None)
    judge = next((s.get("judge_teacher") for s in reversed(m["upstream"]) if s.get("judge_teacher")), None)
    heuristic = next((s.get("heuristic") for s in reversed(m["upstream"]) if s.get("heuristic")), None)
    parts = [
        _yaml_header(m, cfg, schema), "",
        f"# {name}", "",
        f"Synthetic instruction-tuning data made by `distill` {m['code_version']}: a teacher model's answers, "
        "gated, deduplicated, scored and selected best-first. " + _FORMATS[m.get("format", "messages")], "",
        f"Format: **{m.get('format', 'messages')}** (`distill export --format`).", "",
        "## Contents", "",
        _table(["split", "rows"], [[s, f"{n:,}"] for s, n in m["splits"].items()]), "",
        _table(["file", "rows", "bytes", "sha256"], [[f["path"], f"{f['rows']:,}", f"{f['bytes']:,}", f["sha256"][:16] + "..."]
                                                     for f in m["files"]]), "",
        f"Columns: {', '.join('`' + c + '`' for c in m['columns'])}. Full checksums are in `manifest.json`.", "",
        "## Sources", "",
        _table(["origin", "rows"], [[k, f"{v:,}"] for k, v in m["sources"].items()]), "",
        "## Teacher", "",
        _table(["teacher model", "rows"], [[k, f"{v:,}"] for k, v in m["teachers"].items()]), "",
        "## Scores", "",
        f"Combined score source: **{score_src or 'unknown'}**"
        + (f" (judge: {json.dumps(judge)})" if judge else "") + ". " + SCORE_SOURCES.get(score_src, "")
        + (" Here without the relevance factor: length only." if heuristic == "length" else ""), "",
        "```json", json.dumps(m["score"], indent=2), "```", "",
        *_erasure_section(m),
        *_reasoning_section(m),
        *_logprobs_section(m),
        *_hard_section(m),
        "## How it was made", "",
        _table(["stage", "rows in", "rows out", "rejected", "top drop reasons"],
               [[s.get("stage"), s.get("rows_in"), s.get("rows_out"), s.get("rows_rejected", 0),
                 ", ".join(f"{k}={v}" for k, v in sorted((s.get("drops") or {}).items(), key=lambda kv: -kv[1])[:4])]
                for s in m["upstream"]]), "",
        *_versions_section(m),
        "## Loading", "",
        "```python", "from datasets import load_dataset", "",
        "ds = load_dataset(\"parquet\", data_files={"
        + ", ".join(f'"{s}": "{s}-*.parquet"' for s in m["splits"]) + "})",
        *([f"print(ds[\"train\"][0][\"{c}\"])" for c in ("prompt", "completion")]
          if m.get("format") == "prompt_completion" else ["print(ds[\"train\"][0][\"messages\"])"]),
        "```", "",
        "## Licence", "",
        f"Licence field: `{cfg.license}`"
        + (f" (`license_name: {m['license_name']}`, terms: `{m['license_link']}`)" if m.get("license_name") else "")
        + ". The answers were written by the teacher model(s) above; check their "
        "terms of use before you publish or train on this release.", "",
        "## Export config", "",
        "```json", json.dumps(m["config"], indent=2), "```", "",
    ]
    return "\n".join(parts)


def _hard_section(m: dict[str, Any]) -> list[str]:
    """The hard share `distill hard` found upstream (Lion), when it ran."""
    h = next((s["hard_share"] for s in reversed(m["upstream"]) if s.get("hard_share")), None)
    if h is None:
        return []
    pct = f" ({100 * h['hard'] / h['judged']:.0f}%)" if h["judged"] else ""
    return ["## Hard examples", "", f"Hard share: {h['hard']:,} of {h['judged']:,} judged rows{pct} were hard for the "
            "student (the referee scored the teacher's answer at least the threshold above the student's, both orders "
            f"averaged); the teacher wrote {h['generated_hard']:,} new instructions after hard rows and "
            f"{h['generated_easy']:,} after easy ones (`origin` hard:<parent id>, meta.hard).", ""]


def _erasure_section(m: dict[str, Any]) -> list[str]:
    """What the Orca stage put in `messages` as the system turn: the one the teacher answered under, or
    the generic one (prompt erasure). Nothing when no Orca stage is upstream."""
    orca = [s for s in m["upstream"] if s.get("stage") == "orca"]
    if not orca:
        return []
    e = orca[-1].get("system_message_erasure")
    if e is None:  # written before the option existed, when Orca always erased
        line = ("Prompt erasure: **on** (recorded before `[orca] erase_system` existed, when every Orca row's "
                "`messages` carried the generic system message).")
    elif e.get("erased"):
        why = "Orca 2 mode" if e.get("option") == "auto" else f"erase_system = {json.dumps(e.get('option'))}"
        line = (f"Prompt erasure: **on** ({why}). The teacher answered each Orca row under the system message or "
                "strategy that its `strategy` column names; its `messages` carry the generic system message instead: "
                f"{json.dumps(e.get('generic_system', ''))}.")
    else:
        mode = "Orca 1 mode" if e.get("mode") == "orca1" else "Orca 2 mode"
        line = (f"Prompt erasure: **off** ({mode}, erase_system = {json.dumps(e.get('option'))}). Each Orca row's "
                "`messages` begin with the system message its answer was generated under (`strategy` names it); "
                "rows drawn with the empty system message have no system turn.")
    return ["## System messages", "", line, ""]


_REASONING_FORMATS = {
    "field": ("**field**: each row's `messages` carry the answer only; the teacher's reasoning trace is in the "
              "`reasoning` column (null where the teacher gave none). The default, because it loses nothing and "
              "decides nothing for the trainer: train on the answers as they are, or put the trace back in "
              "`<think>` tags (`distill export --reasoning think_tags`) to distil the reasoning too."),
    "think_tags": ("**think_tags**: the assistant turn of each row with a trace is `<think>\n{reasoning}\n</think>"
                   "\n\n{answer}`, as DeepSeek-R1's distilled models were trained; there is no `reasoning` column."),
    "answer_only": ("**answer_only**: the teacher's reasoning traces are left out; `messages` carry the answer "
                    "only and there is no `reasoning` column."),
}


def _reasoning_section(m: dict[str, Any]) -> list[str]:
    """Where the teacher's reasoning went (the `--reasoning` format) and how long the traces are."""
    r = m.get("reasoning")
    if not r:
        return []
    lines = ["## Reasoning", "", f"Reasoning format: {_REASONING_FORMATS[r['format']]}", ""]
    if r.get("rows_with_reasoning"):
        lines += [f"{r['rows_with_reasoning']:,} of {r['rows']:,} rows have a reasoning trace: {r['mean']:,.0f} "
                  f"characters on average (median {r['median']:,.0f}, at most {r['max']:,}).", ""]
    else:
        lines += ["No row has a reasoning trace (the teacher returned none).", ""]
    return lines


def _logprobs_section(m: dict[str, Any]) -> list[str]:
    """The teacher's top-k logprobs side files (`--with-logprobs`): what they hold and how to read them."""
    lp = m.get("logprobs")
    if not lp:
        return []
    bpt = f", {lp['bytes_per_token']} bytes per token" if lp.get("bytes_per_token") else ""
    return ["## Teacher logprobs", "",
            f"`logprobs-<shard>.parquet` next to each shard holds the teacher's top-k token logprobs of each answer, "
            f"one row per shard row in the same order (`id` to check): {lp['tokens']:,} tokens in {lp['bytes']:,} "
            f"bytes{bpt}. Columns `token`, `logprob`, `top_token`, `top_logprob`; tokens are the teacher's token "
            f"bytes; {lp['encoding']}. Read them with `pipeline.kd.load_soft_targets(release, tokenizer)`, which "
            "maps them to a student tokenizer with the same vocabulary (null rows: the teacher gave none).", ""]


def _versions_section(m: dict[str, Any]) -> list[str]:
    versions = m.get("versions") or []
    if not versions:
        return []
    return ["## Versions", "",
            "This release was drawn from a pool that nightly refreshes grow: each night adds only rows that "
            "survived deduplication against everything published before it. The table above shows the stages "
            f"of the latest night ({versions[-1]['version']}); the pool's rows by the night that added them:", "",
            _table(["version", "rows added"], [[v["version"], f"{v['rows_added']:,}"] for v in versions]), ""]


def license_text(m: dict[str, Any]) -> str:
    """LICENSE.md for `license: other` with no license_link of the user's: whose terms the release falls under."""
    teachers = "\n".join(f"- `{t}`" for t in m["teachers"]) or "- (none recorded)"
    return (f"# {m['pretty_name']}: terms\n\nThis release has no licence of its own (`license: other`, "
            f"`license_name: {m['license_name']}`). Its answers were written by these teacher models, and their "
            f"terms of use govern what you may do with them:\n\n{teachers}\n\nThe instructions come from the "
            "sources in README.md; check their licences too. Set `[export] license` (or `license_name` and "
            "`license_link`) once you know the terms.\n")


def write_card(out: Path, manifest: dict[str, Any], cfg, schema: pa.Schema) -> None:
    run = manifest.get("run_id")
    manifest["pretty_name"] = cfg.pretty_name or (f"distill {run}" if run else out.resolve().name)
    if manifest.get("license_link") == LICENSE_FILE and not cfg.license_link:
        atomic_write_bytes(out / LICENSE_FILE, license_text(manifest).encode("utf-8"))
    elif cfg.license_link != LICENSE_FILE:
        (out / LICENSE_FILE).unlink(missing_ok=True)  # an earlier export's, now stale
    atomic_write_bytes(out / "README.md", render_card(manifest, cfg, schema).encode("utf-8"))
