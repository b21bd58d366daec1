"""`[self_instruct] logprobs = K`: each instance row keeps the top-K logprobs of its own output's tokens.

A loopback OpenAI-compatible teacher (real HTTP, the openai backend) answers with `logprobs.content` for a
reply of two labelled instances ("Example k / Input: / Output:"), a bare unlabelled one and the output-first
"Class label:" form; the rows' tokens must cover exactly their outputs, keep the alternatives, and go through
`distill export --with-logprobs` to `pipeline.kd.load_soft_targets`. The last test runs the same on the
embedded llama.cpp teacher.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from self_instruct_server import answer as standin_answer
from self_instruct_server import digest, kind
from typer.testing import CliRunner

from pipeline import records
from pipeline.cli import app
from pipeline.config import ConfigError
from pipeline.errors import EXIT_CODES
from pipeline.kd import load_soft_targets, side_files, teacher_vocab
from pipeline.logprobs import token_bytes
from pipeline.stages.self_instruct.instances import output_logprobs, parse_generation
from pipeline.store import Dataset

K = 3
_TOKEN = re.compile(r" ?\w+|[^\w\s]+\n?|\s")   # BPE-like: a space glued to the next word, "." to its newline


def tokens(text: str) -> list[dict]:
    """OpenAI chat `logprobs.content` for `text`: K alternatives per position, the token itself best; a
    non-ASCII character is cut into one token per byte, as a byte-level teacher may (text "\ufffd", its bytes)."""
    out = []
    for piece in _TOKEN.findall(text):
        parts = [(piece, list(piece.encode()))] if piece.isascii() else [("\ufffd", [b]) for b in piece.encode()]
        for tok, raw in parts:
            alts = [{"token": tok, "logprob": -0.25, "bytes": raw}] + [
                {"token": f" alt{j}", "logprob": -1.5 - j, "bytes": list(f" alt{j}".encode())} for j in range(1, K)]
            out.append({"token": tok, "logprob": -0.25, "bytes": raw, "top_logprobs": alts})
    assert b"".join(bytes(t["bytes"]) for t in out) == text.encode()
    return out


def instances_reply(body: dict) -> str:
    content = body["messages"][-1]["content"]
    if "Class label" in content:
        return standin_answer(body)                    # "Class label: High\n<words>\nClass label: Low\n..."
    ins = content.rsplit("Task: ", 1)[1].split("\n")[0]
    word = ins.split()[-1]
    if digest(ins) % 2:
        return (f"Example 1\nInput: {word} first\nOutput: {word} one.\n"
                f"Example 2\nInput: {word} second\nOutput: the café {word}.\n")
    return f"{word} is the answer, café."            # an unlabelled reply: all of it is the one output


class Teacher:
    """Bootstrap and classification as tests/self_instruct_server.py; instances as `instances_reply`."""

    def __init__(self):
        self.logprobs_asked: list[int | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                k = kind(body)
                if k != "bootstrap" and "Task: " not in body["messages"][-1]["content"]:
                    k = "ping"
                text = instances_reply(body) if k == "instances" else "ok" if k == "ping" else standin_answer(body)
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                if k == "instances":
                    server.logprobs_asked.append(body.get("top_logprobs") if body.get("logprobs") else None)
                if body.get("logprobs"):
                    choice["logprobs"] = {"content": tokens(text)}
                data = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "lp-model",
                                   "choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 9}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def teacher():
    t = Teacher()
    yield t
    t.close()


def config(tmp_path: Path, base_url: str, model: str = "lp-model", extra: str = "") -> Path:
    cfg = tmp_path / "distill.toml"
    cfg.write_text(f'[teacher]\nbackend = "openai"\nbase_url = "{base_url}"\nmodel = "{model}"\nconcurrency = 2\n'
                   f'timeout_s = 300\ncache = false\n\n[self_instruct]\n{extra}')
    return cfg


def run_cli(*args: str) -> None:
    r = CliRunner().invoke(app, [*args, "--no-progress"])
    assert r.exit_code == 0, r.output


def kept_bytes(m: dict) -> bytes:
    joined = b"".join(token_bytes(p[0]) for p in m["logprobs"])
    lead, trail = m["logprobs_trim"]
    return joined[lead:len(joined) - trail]


def test_each_instance_keeps_its_own_outputs_logprobs_through_export_and_the_loader(tmp_path, teacher):
    cfg = config(tmp_path, teacher.base_url, extra="num_instructions = 8\nrequest_batch_size = 2\n")
    run_cli("self-instruct", "--out", str(tmp_path / "si"), "--config", str(cfg), "--workdir", str(tmp_path / "w"),
            "--logprobs", str(K))
    assert teacher.logprobs_asked and set(teacher.logprobs_asked) == {K}   # instance requests ask for top-K
    rows = list(Dataset(tmp_path / "si").iter_rows())
    kinds = {"labelled": 0, "unlabelled": 0, "classification": 0}
    for r in rows:
        m = records.get_meta(r, "self_instruct")
        raw = m["instances_raw"]
        kinds["classification" if r["is_classification"] else "labelled" if "Output:" in raw else "unlabelled"] += 1
        assert kept_bytes(m) == r["output"].encode()                      # its own output, no other instance's
        whole = not r["is_classification"] and "Output:" not in raw
        assert 0 < len(m["logprobs"]) <= len(tokens(raw)) and (whole or len(m["logprobs"]) < len(tokens(raw)))
        for tok, lp, alts in m["logprobs"]:
            assert lp == -0.25 and len(alts) == K and alts[0][0] == tok and alts[1] == [" alt1", -2.5]
        if whole:
            assert m["logprobs_trim"] == [0, 0] and r["output"] == raw    # the whole reply is the output
            assert [195] in [p[0] for p in m["logprobs"]]                 # the split "é": its bytes as identity
        elif not r["is_classification"]:
            assert m["logprobs_trim"] == [1, 1]   # " word" (the space after "Output:") ... ".\n" straddle the edges
    assert all(kinds.values()), kinds
    assert json.loads((tmp_path / "si" / "_manifest.json").read_text())["totals"]["logprobs_unaligned"] == 0
    assert len({r["output"] for r in rows if not r["is_classification"]}) > 1

    run_cli("export", str(tmp_path / "si"), "--out", str(tmp_path / "rel"), "--with-logprobs", "--config", str(cfg))
    assert side_files(tmp_path / "rel")
    targets = load_soft_targets(tmp_path / "rel", teacher_vocab(tmp_path / "rel"))
    by_id = {r["id"]: records.get_meta(r, "self_instruct")["logprobs"] for r in rows}
    assert sorted(t.id for t in targets) == sorted(by_id)
    vocab = teacher_vocab(tmp_path / "rel")
    for t in targets:
        lp = by_id[t.id]
        assert t.ids.tolist() == [vocab[token_bytes(p[0])] for p in lp]
        assert t.top_ids.shape == (len(lp), K) and t.top_ids[:, 1].tolist() == [vocab[b" alt1"]] * len(lp)
        assert abs(float(t.top_logprobs[0, 2]) + 3.5) <= 1 / 128


def test_without_logprobs_the_requests_ask_for_none_and_rows_keep_none(tmp_path, teacher):
    cfg = config(tmp_path, teacher.base_url, extra="num_instructions = 2\nrequest_batch_size = 1\n")
    run_cli("self-instruct", "--out", str(tmp_path / "si"), "--config", str(cfg), "--workdir", str(tmp_path / "w"))
    assert teacher.logprobs_asked and set(teacher.logprobs_asked) == {None}
    for r in Dataset(tmp_path / "si").iter_rows():
        assert "logprobs" not in records.get_meta(r, "self_instruct")


def test_token_spans_straddling_a_label_or_lost_in_the_reply():
    reply = "Example 1\nInput: a\nOutput: Paris.\nExample 2\nInput: b\nOutput: Rome\n"
    lp = [[t["token"], t["logprob"], []] for t in tokens(reply)]
    first, second = parse_generation(reply)
    kept, trim = output_logprobs(reply, lp, first.span)
    assert [p[0] for p in kept] == [" Paris", ".\n"] and trim == [1, 1]
    kept, trim = output_logprobs(reply, lp, second.span)
    assert [p[0] for p in kept] == [" Rome"] and trim == [1, 0]
    # a reasoning trace cut from the text before it: the text is found at the end of the tokens
    think = [["<think>", -0.1, []], ["x", -0.1, []], ["</think>", -0.1, []], ["\n\n", -0.1, []]]
    assert output_logprobs("Rome", think + [["Rome", -0.2, []]], (0, 4)) == ([["Rome", -0.2, []]], [0, 0])
    assert output_logprobs("Lisbon", lp, (0, 6)) is None               # not what the tokens say: no logprobs


def test_alpaca_mode_refuses_logprobs_in_one_line(tmp_path, teacher):
    cfg = config(tmp_path, teacher.base_url, extra='mode = "alpaca"\nlogprobs = 5\n')
    r = CliRunner().invoke(app, ["self-instruct", "--out", str(tmp_path / "si"), "--config", str(cfg),
                                 "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert isinstance(r.exception, ConfigError) and EXIT_CODES[ConfigError] == 2, r.output
    assert "logprobs is kept for instance generation (mode self_instruct); alpaca mode has none" in str(r.exception)
    assert "\n" not in str(r.exception)


@pytest.mark.teacher
def test_instance_logprobs_on_the_embedded_teacher(tmp_path, teacher_server):
    cfg = config(tmp_path, teacher_server, model="smollm2-135m-instruct", extra=(
        "num_instructions = 2\nrequest_batch_size = 1\npatience = 2\nmax_requests = 3\ntruncated = \"drop_last\"\n"
        "[self_instruct.bootstrap]\nmax_tokens = 64\n[self_instruct.instances]\nmax_tokens = 160\n"
        "max_tokens_classification = 160\n"))
    run_cli("self-instruct", "--out", str(tmp_path / "si"), "--config", str(cfg), "--workdir", str(tmp_path / "w"),
            "--logprobs", "5")
    rows = list(Dataset(tmp_path / "si").iter_rows())
    if not rows:
        pytest.skip("the 135M teacher wrote no task that passed the filters in 3 requests")
    for r in rows:
        m = records.get_meta(r, "self_instruct")
        assert kept_bytes(m) == r["output"].encode(), (m["instances_raw"], r["output"])
        assert all(len(alts) == 5 for _, _, alts in m["logprobs"])
    run_cli("export", str(tmp_path / "si"), "--out", str(tmp_path / "rel"), "--with-logprobs", "--config", str(cfg))
    targets = load_soft_targets(tmp_path / "rel", teacher_vocab(tmp_path / "rel"))
    assert len(targets) == len(rows) and all(len(t.ids) and t.top_ids.shape == (len(t.ids), 5) for t in targets)
