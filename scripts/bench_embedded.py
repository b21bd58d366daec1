#!/usr/bin/env python
"""Benchmark: the embedded teacher's tokens/s, by llama.cpp buffer mode, threads and replicas.

Every variant answers the same requests (greedy, fixed seeds, the same
max_tokens), one variant after another in this run, through the pipeline's
own client path (the `openai` backend over loopback to the server children):

    repack-on  tN     llama.cpp's default weight repacking (AMX/AVX extra buffers): the old default;
                      on AMX CPUs it segfaults, which is reported as the variant's result
    repack-off tN     plain CPU buffers (what distill runs), N threads in one child
    repack-off 2x tN  two children (`teacher.replicas = 2`) of N threads each
    in-process tN     the old path: llama_cpp.Llama inside this process (repack off, so it
                      runs here), requests one after another; the cost of the child + HTTP

Printed per variant: completion tokens/s, requests/s, and the ratio to the
first variant that ran without crashing. Run it on an idle machine.

    python scripts/bench_embedded.py [--requests 24] [--max-tokens 96]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import TeacherSection  # noqa: E402
from pipeline.errors import TeacherUnavailable  # noqa: E402
from pipeline.teacher.base import ChatRequest, Sampling  # noqa: E402
from pipeline.teacher.openai_backend import OpenAIBackend  # noqa: E402
from pipeline.teacher.server import EmbeddedServer  # noqa: E402


def requests(n: int, max_tokens: int) -> list[ChatRequest]:
    s = Sampling(temperature=0.0, max_tokens=max_tokens)
    return [ChatRequest(messages=[{"role": "user", "content": f"Explain topic number {i} of biology in a paragraph."}],
                        sampling=s, record_id=f"bench-{i}", purpose="bench") for i in range(n)]


def run_variant(repack: bool, threads: int, replicas: int, reqs: list[ChatRequest]) -> dict:
    servers = [EmbeddedServer(n_threads=threads, keep_repack=repack, ready_timeout_s=120) for _ in range(replicas)]
    try:
        for s in servers:
            s.start()
        section = TeacherSection(backend="openai", base_url=servers[0].base_url, model=servers[0].alias,
                                 concurrency=2 * replicas, max_retries=0, timeout_s=300, cache=False)
        # a crashed child is not restarted here: the variant's result is the crash
        client = OpenAIBackend(section, endpoints=[s.base_url for s in servers],
                               revive=lambda k: servers[k].alive())
        client.chat(reqs[:replicas])  # warm each child (first-request set-up)
        time.sleep(0.5)
        if any(not s.alive() for s in servers):
            dead = next(s for s in servers if not s.alive())
            client.close()
            return {"crashed": f"server {dead.exit_description()} on its first request (log {dead.log})"}
        t0 = time.perf_counter()
        out = client.chat(reqs)
        dt = time.perf_counter() - t0
        client.close()
        dead = [s for s in servers if not s.alive()]
        if dead:
            return {"crashed": f"server {dead[0].exit_description()} (log {dead[0].log})"}
        errors = [c.error for c in out if c.error is not None]
        if errors:
            return {"crashed": f"{len(errors)} errors, first: {errors[0].kind}: {errors[0].message[:120]}"}
        tokens = sum(c.usage.completion_tokens for c in out)
        return {"tok_s": tokens / dt, "req_s": len(out) / dt, "tokens": tokens, "seconds": dt}
    except TeacherUnavailable as e:
        return {"crashed": str(e)[:200]}
    finally:
        for s in servers:
            s.close()


def run_in_process(threads: int, reqs: list[ChatRequest]) -> dict:
    from llama_cpp import Llama

    from pipeline.models import smollm2_gguf
    from pipeline.teacher.embedded_server import disable_weight_repacking

    disable_weight_repacking()
    llm = Llama(model_path=str(smollm2_gguf()), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)

    def ask(r: ChatRequest) -> int:
        out = llm.create_chat_completion(messages=list(r.messages), temperature=0.0,
                                         max_tokens=r.sampling.max_tokens, seed=1)
        return out["usage"]["completion_tokens"]

    ask(reqs[0])
    t0 = time.perf_counter()
    tokens = sum(ask(r) for r in reqs)
    dt = time.perf_counter() - t0
    llm.close()
    return {"tok_s": tokens / dt, "req_s": len(reqs) / dt, "tokens": tokens, "seconds": dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    reqs = requests(args.requests, args.max_tokens)
    variants = [(False, cores, 1), (True, 1, 1), (True, cores, 1), (False, 1, 1)]
    if cores >= 2:
        variants.append((False, cores // 2, 2))
    variants += [("in-process", 1, 1), ("in-process", cores, 1)]
    base = None
    print(f"{cores} cores, {args.requests} requests of up to {args.max_tokens} tokens, greedy")
    for repack, threads, replicas in variants:
        if repack == "in-process":
            name, r = f"in-process t{threads}", run_in_process(threads, reqs)
        else:
            name = f"repack-{'on' if repack else 'off'} {replicas}x t{threads}"
            r = run_variant(repack, threads, replicas, reqs)
        if "crashed" in r:
            print(f"{name:<22} CRASHED: {r['crashed']}", flush=True)
            continue
        base = base or r
        print(f"{name:<22} {r['tok_s']:7.1f} tok/s  {r['req_s']:5.2f} req/s  "
              f"{r['tok_s'] / base['tok_s']:.2f}x  ({r['tokens']} tokens in {r['seconds']:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
