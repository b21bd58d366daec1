#!/usr/bin/env python
"""Benchmark: a release's teacher-logprob side file at top-k = 20, against the raw JSON the server returned.

Asks an OpenAI-compatible server for N answers (chat completions, `logprobs: true`, `top_logprobs: k`),
by default the embedded SmolLM2 teacher started here (llama.cpp with `--logits-all`, as `distill teacher
serve` runs it), or the server at --base-url. Stores them the way a release does: each answer a row with
its compact logprobs in `meta.orca.logprobs` (what `distill orca --logprobs K` keeps), then `run_export` with
`with_logprobs`, which writes logprobs-<shard>.parquet (zstd) next to each shard. Then prints, from
`pipeline.logprobs.measure` (the function the k = 20 teacher test uses) over the release's side files:

    tokens                       generated positions with logprobs
    bytes/token                  the side files on disk, against the server's response bodies (and against
                                 the `logprobs` objects alone, re-serialised), and their ratio
    top-1 agreement              positions whose stored best token is the raw best (must be all of them)
    max |error|                  the largest error of any kept logprob, in nats (target <= 0.05)

Sizes, not timings: the figures do not depend on the machine's load. Exit status 0 when the release
meets the targets (ratio line printed either way), 1 when it does not, 4 when the server cannot be reached.

    python scripts/bench_logprobs.py [--n 20] [--k 20] [--max-tokens 100] [--base-url URL] [--model NAME]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline import logprobs as L  # noqa: E402
from pipeline.records import build_messages, new_row, set_meta  # noqa: E402
from pipeline.stages.export.config import ExportConfig  # noqa: E402
from pipeline.stages.export.stage import run_export  # noqa: E402
from pipeline.store import DatasetWriter  # noqa: E402

TOPICS = ["why the sky is blue", "how bread rises", "how a bicycle stays upright", "what a compiler does",
          "how bees make honey", "why the seasons change", "how a refrigerator works", "what causes tides",
          "how vaccines train the immune system", "why ice floats", "how a rainbow forms", "what a black hole is",
          "how paper is made", "why cats purr", "how the heart pumps blood", "what inflation means",
          "how glass is made", "why leaves change colour", "how a battery stores energy", "what DNA does"]
MAX_ERROR = 0.05
MAX_BYTES_PER_TOKEN = 96
MIN_TOKENS = 250


def prompts(n: int) -> list[str]:
    """n distinct questions (a release row's id is its text)."""
    return [f"Explain in detail {TOPICS[i % len(TOPICS)]}." + (f" (part {i // len(TOPICS) + 1})" if i >= len(TOPICS)
                                                                else "") for i in range(n)]


def ask(base_url: str, model: str, prompt: str, k: int, max_tokens: int, seed: int) -> tuple[bytes, dict[str, Any]]:
    """(the response body as the server sent it, its `choices[0]`)."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.7, "seed": seed, "logprobs": True, "top_logprobs": k}
    req = urllib.request.Request(base_url.rstrip("/") + "/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        raw = r.read()
    return raw, json.loads(raw)["choices"][0]


def served_model(base_url: str) -> str:
    with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=30) as r:
        return json.loads(r.read())["data"][0]["id"]


def release_side_table(release: Path, ids: list[str]) -> tuple[pa.Table, int]:
    """The release's side-file rows in the order of `ids`, and the side files' bytes on disk."""
    manifest = json.loads((release / "manifest.json").read_text())
    files = manifest["logprobs"]["files"]
    table = pa.concat_tables(pq.read_table(release / f["path"]) for f in files)
    at = {rid: i for i, rid in enumerate(table.column("id").to_pylist())}
    return table.take([at[i] for i in ids]), sum(f["bytes"] for f in files)


def store_as_release(answers: list[tuple[str, dict[str, Any]]], k: int, model: str, work: Path) -> tuple[Path, list[str]]:
    """A pool of one row per answer, as `distill orca --logprobs k` keeps it, exported with its side files."""
    rows = []
    for prompt, choice in answers:
        text = choice["message"].get("content") or ""
        r = new_row(prompt, "", text, origin="orca", teacher_model=model, teacher_backend="openai")
        r["messages"] = build_messages(prompt, "", text, None)
        set_meta(r, "orca", {"logprobs": L.compact(choice["logprobs"], k)})
        rows.append(r)
    w = DatasetWriter(work / "pool", "orca")
    w.write_shard(0, rows)
    w.write_manifest(input=None)
    run_export(work / "pool", work / "release", ExportConfig(with_logprobs=True), progress=False)
    return work / "release", [r["id"] for r in rows]


def run(base_url: str, model: str | None, n: int, k: int, max_tokens: int, work: Path) -> int:
    model = model or served_model(base_url)
    answers, bodies = [], 0
    for i, p in enumerate(prompts(n)):
        raw, choice = ask(base_url, model, p, k, max_tokens, seed=i + 1)
        if not (choice.get("logprobs") or {}).get("content"):
            print(f"bench_logprobs: {base_url} returned no logprobs.content for top_logprobs={k}; "
                  "serve the model with logprobs on (llama.cpp: --logits-all)", file=sys.stderr)
            return 1
        answers.append((p, choice))
        bodies += len(raw)
        print(f"  answer {i + 1}/{n}: {len(choice['logprobs']['content'])} tokens", file=sys.stderr, flush=True)
    release, ids = store_as_release(answers, k, model, work)
    table, size = release_side_table(release, ids)
    raws = [c["logprobs"]["content"] for _, c in answers]
    m = L.measure(raws, k, table=table, size=size, raw_bytes=bodies)
    alone = L.measure(raws, k, table=table, size=size)["raw_json_bytes_per_token"]
    tokens, bpt, raw_bpt = m["tokens"], m["bytes_per_token"], m["raw_json_bytes_per_token"]
    print(f"bench_logprobs: {n} answers from {base_url} ({model}), top_logprobs k={k}, max_tokens {max_tokens}")
    print(f"tokens: {tokens}")
    print(f"release side file (Parquet zstd): {bpt:.1f} B/token ({size:,} bytes)")
    print(f"raw server JSON: {raw_bpt:.1f} B/token (response bodies, {bodies:,} bytes); "
          f"{alone:.1f} B/token (the logprobs objects alone)")
    print(f"ratio: release / raw JSON = {bpt / raw_bpt:.4f} ({raw_bpt / bpt:.1f}x smaller)")
    exact = m["top1_agree"] == tokens
    print(f"top-1 agreement: {m['top1_agree']}/{tokens} ({'exact' if exact else 'NOT exact'})")
    print(f"max |error| of the kept logprobs: {m['max_error_nats']:.4f} nats (target <= {MAX_ERROR})")
    sized = k == 20 and tokens >= MIN_TOKENS  # fewer tokens measure mostly Parquet's fixed overhead
    ok = exact and m["max_error_nats"] <= MAX_ERROR and (not sized or bpt <= MAX_BYTES_PER_TOKEN)
    size_target = f"<= {MAX_BYTES_PER_TOKEN} B/token" if sized else f"size not judged under k=20 or {MIN_TOKENS} tokens"
    print(f"targets (top-1 exact, error <= {MAX_ERROR} nats, {size_target}): {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20, help="answers to ask for")
    ap.add_argument("--k", type=int, default=20, help="top_logprobs per position (at most 20)")
    ap.add_argument("--max-tokens", type=int, default=100)
    ap.add_argument("--base-url", help="an OpenAI-compatible server's /v1 URL (default: start the embedded teacher)")
    ap.add_argument("--model", help="the model name to ask for (default: the server's first /models entry)")
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads of the embedded teacher")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-logprobs-") as tmp:
        work = Path(tmp)
        server = None
        try:
            if args.base_url is None:
                from pipeline.teacher.server import start_server
                server = start_server(log=work / "server.log", n_threads=args.threads, timeout_s=300)
            base_url = args.base_url or server.base_url
            return run(base_url, args.model or (server.alias if server else None), args.n, args.k,
                       args.max_tokens, work)
        except (urllib.error.URLError, ConnectionError) as e:
            print(f"bench_logprobs: cannot reach {args.base_url or 'the embedded teacher'}: {e}; "
                  "check --base-url", file=sys.stderr)
            return 4
        finally:
            if server is not None:
                server.close()


if __name__ == "__main__":
    sys.exit(main())
