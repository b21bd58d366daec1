"""Where a teacher's reasoning is, in what a backend returned: kept out of the answer text.

Reads a chat-completion `message` (a dict) or a generated text; returns (answer, reasoning). Writes nothing.

Three places, in this order:

- a reasoning field on the message: `reasoning` (vLLM >= 0.11 with `--reasoning-parser`, OpenRouter),
  else `reasoning_content` (older vLLM, DeepSeek's API, llama.cpp's server with `--reasoning-format`);
- else `<think>...</think>` at the start of the text (R1-style models, any server without a parser);
- else `...</think>` with no opening tag: R1-distilled chat templates end the prompt with `<think>`, so the
  text starts inside the trace (vLLM's deepseek_r1 parser reads it the same way).

A text that opens `<think>` and never closes it (cut off while thinking) is all reasoning, with an empty
answer: the stage then drops it as an empty answer rather than training on half a thought as the answer.
"""

from __future__ import annotations

import re
from typing import Any

_OPEN = re.compile(r"^\s*<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)
FIELDS = ("reasoning", "reasoning_content")


def split_think(text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of a text that may carry R1-style `<think>` tags; (text, None) when it has none."""
    opened = _OPEN.match(text)
    body = text[opened.end():] if opened else text
    close = _CLOSE.search(body)
    if close is None:
        return ("", body.strip()) if opened else (text, None)
    return body[close.end():].strip(), body[:close.start()].strip()


def split_message(message: dict[str, Any], text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of a chat message whose content is `text`: its reasoning field, else the tags."""
    for name in FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            answer, inline = split_think(text)  # a server that filled the field leaves no tags; strip any it left
            return answer, value.strip() if inline is None else f"{value.strip()}\n\n{inline}"
    return split_think(text)
