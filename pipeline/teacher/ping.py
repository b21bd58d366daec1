"""The ping: one tiny request to the teacher before any work, so a dead teacher is exit 4 in seconds.

`ask(teacher, ...)` sends one short request and raises TeacherUnavailable
(one line: the backend, where, the error kind and message) for any failed
answer. `probe(section, ...)` pings a network teacher (backend `openai`) with
its own short-lived client: few retries (PING_RETRIES) and a short timeout
(`teacher.ping_timeout_s`), never the cache, so a wrong key, an unresolvable
host, a server that is not OpenAI-compatible or one that never answers fails
fast while the run's client keeps its configured retries. `preflight(factory)`
is what every teacher-using command calls before its first shard: it probes
the factory's teacher when that is a network one; a local engine (llamacpp,
vllm) proves itself by loading, and a scripted test teacher (a factory that is
not a `TeacherFactory`) is never pinged. Reads and writes nothing on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TeacherUnavailable
from .base import ChatRequest, Completion, Sampling, completion_request
from .factory import TeacherFactory, make_backend

PING_RETRIES = 1
PING_PROMPT = "Reply with the word: ready"
NETWORK_BACKENDS = ("openai",)


def where(section: Any) -> str:
    return f" at {section.base_url}" if section.backend == "openai" else ""


def ask(teacher: Any, section: Any, *, max_tokens: int = 8, record_id: str = "ping", purpose: str = "ping",
        prompt: str = PING_PROMPT, text_completion: bool = False) -> Completion:
    """One request (`text_completion`: to /v1/completions, as score's Deita scorers are asked); its
    completion, or TeacherUnavailable in one line when it failed."""
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
    [c] = teacher.chat([completion_request(prompt, sampling, record_id, purpose) if text_completion else
                        ChatRequest(messages=[{"role": "user", "content": prompt}], sampling=sampling,
                                    record_id=record_id, purpose=purpose)])
    if c.error is not None:
        raise TeacherUnavailable(f"{teacher.backend} teacher{where(section)} did not answer the ping: "
                                 f"{c.error.kind}: {' '.join(c.error.message.split())[:300]}")
    return c


def probe_section(section: Any) -> Any:
    """The section of the short-lived ping client: few retries, a short timeout."""
    return section.model_copy(update={"max_retries": min(section.max_retries, PING_RETRIES),
                                      "timeout_s": min(section.timeout_s, section.ping_timeout_s)})


def probe(section: Any, *, seed: int = 0, workdir: Path | None = None, **kw: Any) -> Completion:
    """Ping the teacher of `section` with its own short-lived client (no cache); the completion."""
    client = make_backend(probe_section(section), seed=seed, workdir=workdir)
    try:
        return ask(client, section, **kw)
    finally:
        client.close()


def preflight(factory: Any, **kw: Any) -> None:
    """Before any work: probe the network teacher `factory` builds (see the module docstring)."""
    if isinstance(factory, TeacherFactory) and factory.section.backend in NETWORK_BACKENDS:
        probe(factory.section, seed=factory.seed, workdir=factory.workdir, **kw)
