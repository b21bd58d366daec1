"""A scripted teacher for unit tests of parsing and control flow.

It implements the real `Teacher` protocol: a `responder` function maps each
request to a text (or to a `TeacherError`, or to a (text, finish_reason)
pair). It is never the only test of a path: every stage also runs against the
embedded llama.cpp teacher over real HTTP.
"""

from __future__ import annotations

from typing import Callable

from .base import ChatRequest, Completion, OnDone, TeacherError, TeacherUsage, Usage

Reply = str | TeacherError | tuple[str, str]


class FakeTeacher:
    backend = "fake"

    def __init__(self, responder: Callable[[ChatRequest], Reply], model: str = "fake-teacher"):
        self.responder = responder
        self.model = model
        self.stats = TeacherUsage()
        self.seen: list[ChatRequest] = []

    def chat(self, requests: list[ChatRequest], on_done: OnDone | None = None) -> list[Completion]:
        out = []
        for i, req in enumerate(requests):
            out.append(self._answer(req))
            if on_done is not None:
                on_done(i, out[-1])
        return out

    def _answer(self, req: ChatRequest) -> Completion:
        self.seen.append(req)
        self.stats.requests += 1
        self.stats.sent += 1
        reply = self.responder(req)
        if isinstance(reply, TeacherError):
            self.stats.errors += 1
            return Completion(text=None, error=reply, model=self.model)
        text, finish = reply if isinstance(reply, tuple) else (reply, "stop")
        usage = Usage(prompt_tokens=sum(len(m["content"].split()) for m in req.messages),
                      completion_tokens=len(text.split()))
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        return Completion(text=text, finish_reason=finish, usage=usage, model=self.model)

    def close(self) -> None:
        pass
