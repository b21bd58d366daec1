"""The embedded teacher's server process: llama-cpp-python's OpenAI-compatible app on one GGUF.

    python -m pipeline.teacher.embedded_server --model FILE [--fd N | --host H --port P] ...

Reads the GGUF; writes only its log (stdout/stderr, redirected by the parent)
and, with `--request-log FILE`, one JSON line per chat request (`recv` when it
arrives, `done` when its answer is ready, with a hash of the body), which is
how tests count what the server was asked.

Differences from `python -m llama_cpp.server`, each on purpose:
- The model is loaded with `use_extra_bufts = False`. llama.cpp's CPU "extra
  buffer types" repack the weights for AMX (and for some AVX/ARM kernels), and
  on AMX CPUs (Sapphire Rapids and later) the AMX matmul segfaults (llama.cpp
  issue 20824; pull request 26954 is the upstream fix for the missing tile
  permission). The plain CPU buffers run on every x86-64 and ARM CPU.
  llama-cpp-python 0.3.36 has no `Llama(...)` argument for it, so the default
  model parameters are wrapped before the model loads.
- `--fd`: serve on a listening socket inherited from the parent. The parent
  keeps it across restarts, so the port never changes and a request sent while
  the server restarts waits in the socket's backlog instead of being refused.
- `--parent-pid`: exit when that process is gone (pipeline.lifecycle).
- `logits_all` is off unless `--logits-all` is given: keeping logits for every
  position costs memory and time on every request, and only a server that
  must honour `logprobs` (`distill teacher serve`) needs it; the `llamacpp`
  backend restarts its children with it at the first request for logprobs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time

from ..lifecycle import die_with_parent


def disable_weight_repacking() -> None:
    """Make every model loaded from now on in this process use plain CPU buffers."""
    import llama_cpp.llama_cpp as native

    original = getattr(native.llama_model_default_params, "distill_original", native.llama_model_default_params)

    def params():
        p = original()
        p.use_extra_bufts = False
        return p

    params.distill_original = original
    native.llama_model_default_params = params


def request_logger(path: str):
    """An ASGI middleware factory appending recv/done lines for each chat request to `path`."""
    lock = threading.Lock()
    fh = open(path, "a", buffering=1, encoding="utf-8")

    def write(event: str, digest: str) -> None:
        with lock:
            fh.write(json.dumps({"event": event, "body": digest, "t": time.time(), "pid": os.getpid()}) + "\n")

    class RequestLog:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope.get("type") != "http" or not scope.get("path", "").endswith("/chat/completions"):
                return await self.app(scope, receive, send)
            chunks: list[bytes] = []
            while True:
                msg = await receive()
                chunks.append(msg.get("body", b""))
                if not msg.get("more_body"):
                    break
            body = b"".join(chunks)
            digest = hashlib.sha256(body).hexdigest()[:16]
            write("recv", digest)
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            async def sending(msg):
                if msg.get("type") == "http.response.start" and msg.get("status") == 200:
                    write("done", digest)
                await send(msg)

            return await self.app(scope, replay, sending)

    return RequestLog


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m pipeline.teacher.embedded_server",
                                 description="The embedded teacher as an OpenAI-compatible server.")
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--alias", required=True, help="model name the server answers to")
    ap.add_argument("--fd", type=int, help="inherited listening socket (instead of --host/--port)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--n-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--request-log", help="append a JSON line per chat request received and answered")
    ap.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    ap.add_argument("--pdeathsig", action="store_true", help="also arm PR_SET_PDEATHSIG (Linux)")
    ap.add_argument("--logits-all", action="store_true", help="keep logits for every position (needed for logprobs)")
    ap.add_argument("--keep-repack", action="store_true",
                    help="measurements only: keep llama.cpp's weight repacking (segfaults on AMX CPUs)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.parent_pid:
        die_with_parent(args.parent_pid, pdeathsig=args.pdeathsig)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    if not args.keep_repack:
        disable_weight_repacking()
    model = ModelSettings(model=args.model, model_alias=args.alias, n_ctx=args.n_ctx,
                          n_threads=args.n_threads, n_threads_batch=args.n_threads,
                          logits_all=args.logits_all, verbose=False)
    app = create_app(server_settings=ServerSettings(host=args.host, port=args.port), model_settings=[model])
    if args.request_log:
        app.add_middleware(request_logger(args.request_log))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        server.run(sockets=[sock])
    else:
        server.run()


if __name__ == "__main__":
    main()
