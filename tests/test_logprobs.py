"""Teacher top-k logprobs: compact capture, the release's side files, their size and accuracy, the KD loader."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline import logprobs as L
from pipeline.cli import app
from pipeline.kd import load_soft_targets, teacher_vocab, vocab_bytes
from pipeline.records import build_messages, new_row, set_meta
from pipeline.stages.export.config import ExportConfig
from pipeline.stages.export.stage import run_export
from pipeline.store import DatasetError, DatasetWriter


def stand_in(n_rows: int, positions: int, k: int = 20, seed: int = 0) -> list[list[dict]]:
    """OpenAI-shape `logprobs.content` lists shaped like the llama.cpp server's: a Zipf-drawn 8k-token vocabulary
    (some tokens split a UTF-8 character, with their `bytes`), top lists in no particular order and now and then
    one entry more than asked (the chosen token outside the top k), logprobs of a peaked softmax."""
    rng = np.random.default_rng(seed)
    words = [f"{'Ġ' if i % 3 else ''}w{i}" for i in range(8000)]
    vocab = [{"token": w, "bytes": None} for w in words]
    vocab += [{"token": "\ufffd", "bytes": [0xE2, 0x80 + i]} for i in range(8)]  # halves of a character
    weights = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    weights /= weights.sum()
    rows = []
    for _ in range(n_rows):
        content = []
        for _ in range(positions):
            picks = rng.choice(len(vocab), size=k + 1, replace=False, p=weights)
            logits = np.sort(rng.gumbel(size=k + 1) * rng.uniform(0.5, 3.0))[::-1]
            logits[0] += rng.exponential(3.0)
            lps = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            top = [dict(vocab[t], logprob=float(lp)) for t, lp in zip(picks, lps)]
            chosen = top[0] if rng.random() < 0.8 else top[int(rng.integers(1, k + 1))]
            shown = top[:k] + ([chosen] if chosen not in top[:k] else [])
            rng.shuffle(shown)
            content.append(dict(chosen, top_logprobs=shown))
        rows.append(content)
    return rows


def text_logprobs(text: str, k: int, positions: int = 5) -> dict:
    """OpenAI-shape logprobs whose tokens spell `text` (in `positions` pieces), each with k - 1 alternatives."""
    cut = [len(text) * i // positions for i in range(positions + 1)]
    pieces = [text[a:b] for a, b in zip(cut, cut[1:])]
    return {"content": [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": [
        {"token": t, "logprob": -0.1, "bytes": list(t.encode())}] + [
        {"token": f"alt{j}", "logprob": -1.0 - j, "bytes": list(f"alt{j}".encode())} for j in range(k - 1)]}
        for t in pieces]}


def check_against_raw(table, raws) -> tuple[float, int, int]:
    """(largest logprob error, positions whose stored best token is the raw best, positions) of a side table."""
    err, top1, n = 0.0, 0, 0
    for row, raw in zip(table.to_pylist(), raws):
        _, lp, top_tokens, top_lps = L.decode_side_row(row)
        for p, chosen_lp, toks, lps in zip(raw, lp, top_tokens, top_lps):
            want = {L.token_bytes(L.compact([q], 1)[0][0]): q["logprob"] for q in p["top_logprobs"]}
            got = dict(zip(toks, lps.tolist()))
            assert set(got) <= set(want) and len(got) == min(20, len(want))
            err = max(err, abs(chosen_lp - p["logprob"]), *(abs(got[t] - want[t]) for t in got))
            top1 += toks[0] == max(want, key=want.get)
            n += 1
    return err, top1, n


def test_compact_keeps_token_bytes_and_sorts_the_top_list():
    raw = {"content": [{"token": "\ufffd", "logprob": -0.5, "bytes": [0xE2, 0x80], "top_logprobs": [
        {"token": "a", "logprob": -3.0, "bytes": [97]}, {"token": "\ufffd", "logprob": -0.5, "bytes": [0xE2, 0x80]},
        {"token": "\ufffd", "logprob": -1.25, "bytes": [0xE2, 0x81]}]}]}
    assert L.compact(raw, 2) == [[[0xE2, 0x80], -0.5, [[[0xE2, 0x80], -0.5], [[0xE2, 0x81], -1.25]]]]
    assert L.compact({"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": -1.0, "b": -2.0}]}, 1) \
        == [["a", -1.0, [["a", -1.0]]]]
    assert L.compact(None, 3) is None


def test_side_file_at_k20_is_under_96_bytes_a_token_with_top1_exact_and_logprobs_within_005():
    raws = stand_in(20, 200)
    table = L.side_table([f"r{i}" for i in range(len(raws))],
                         [json.dumps({"orca": {"logprobs": L.compact(r, 20)}}) for r in raws])
    size, tokens = len(L.side_bytes(table)), L.positions(table)
    raw_json = sum(len(json.dumps({"content": r}).encode()) for r in raws)
    err, top1, n = check_against_raw(table, raws)
    print(f"k=20: {size / tokens:.1f} B/token in Parquet zstd vs {raw_json / tokens:.0f} B/token raw JSON; "
          f"max error {err:.4f} nats; top-1 {top1}/{n}")
    assert tokens == n == 4000
    assert size / tokens <= 96
    assert top1 == n and err <= 0.05


def make_pool(path, n, raws):
    rows = []
    for i in range(n):
        lp = L.compact(raws[i], 20)  # the answer is the text of its tokens, as a teacher's is
        answer = b"".join(L.token_bytes(p[0]) for p in lp).decode("utf-8", errors="ignore")
        r = new_row(f"Question {i}?", "", answer, origin="orca", score=float(n - i),
                    teacher_model="smollm2-135m-instruct", teacher_backend="openai")
        r["messages"] = build_messages(r["instruction"], "", r["output"], None)
        if i % 4 != 3:  # every fourth row was answered without logprobs
            set_meta(r, "orca", {"mode": "system_messages", "logprobs": lp})
        rows.append(r)
    w = DatasetWriter(path, "select")
    w.write_shard(0, rows)
    w.write_manifest(input=None)
    return rows


def test_export_with_logprobs_writes_row_aligned_side_files_that_the_loader_maps(tmp_path):
    raws = stand_in(12, 30, seed=1)
    rows = make_pool(tmp_path / "pool", 12, raws)
    out = tmp_path / "rel"
    r = CliRunner().invoke(app, ["export", str(tmp_path / "pool"), "--out", str(out), "--rows-per-shard", "5",
                                 "--heldout", "2", "--with-logprobs", "--no-progress"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    shards = [f["path"] for f in m["files"]]
    assert [f["shard"] for f in m["logprobs"]["files"]] == shards and len(shards) == 3
    by_id = {x["id"]: (i, x) for i, x in enumerate(rows)}
    for shard in shards:
        ids = pq.read_table(out / shard).column("id").to_pylist()
        side = pq.read_table(out / L.side_file(shard))
        assert side.column("id").to_pylist() == ids  # aligned row for row
        for rid, tok in zip(ids, side.column("token").to_pylist()):
            assert (tok is None) == (by_id[rid][0] % 4 == 3)
    assert m["logprobs"]["tokens"] == 9 * 30 and m["logprobs"]["bytes_per_token"] > 0
    assert "## Teacher logprobs" in (out / "README.md").read_text()

    vocab = teacher_vocab(out, "train") | teacher_vocab(out, "test")
    targets = load_soft_targets(out, vocab) + load_soft_targets(out, vocab, split="test")
    assert len(targets) == 9
    for t in targets:
        raw = raws[by_id[t.id][0]]
        assert t.ids.shape == (30,) and t.top_ids.shape == (30, 20) and t.top_logprobs.dtype == np.float32
        for pos, p in enumerate(raw):
            assert t.ids[pos] == vocab[L.token_bytes(L.compact([p], 1)[0][0])]
            best = max(p["top_logprobs"], key=lambda q: q["logprob"])
            assert t.top_ids[pos, 0] == vocab[L.token_bytes(L.compact([best], 1)[0][0])]
            assert abs(t.top_logprobs[pos, 0] - best["logprob"]) <= 0.05
        assert np.all(np.diff(t.top_logprobs, axis=1) <= 0)  # best first

    plain = CliRunner().invoke(app, ["export", str(tmp_path / "pool"), "--out", str(out), "--no-progress"])
    assert plain.exit_code == 0, plain.output
    assert not list(out.glob("logprobs-*")) and "logprobs" not in json.loads((out / "manifest.json").read_text())


def test_loader_refuses_a_tokenizer_without_the_teachers_tokens_in_one_line(tmp_path):
    raws = stand_in(4, 10, seed=2)
    make_pool(tmp_path / "pool", 4, raws)
    run_export(tmp_path / "pool", tmp_path / "rel", ExportConfig(with_logprobs=True), progress=False)
    vocab = teacher_vocab(tmp_path / "rel")
    lacking = dict(list(vocab.items())[:-5])
    with pytest.raises(DatasetError, match="lacks 5 of the teacher's tokens") as e:
        load_soft_targets(tmp_path / "rel", lacking)
    assert "\n" not in str(e.value)
    run_export(tmp_path / "pool", tmp_path / "plain", ExportConfig(), progress=False)
    with pytest.raises(DatasetError, match="--with-logprobs"):
        load_soft_targets(tmp_path / "plain", vocab)


def test_vocab_bytes_reads_byte_level_and_sentencepiece_pieces():
    class Tok:
        def __init__(self, vocab):
            self.vocab = vocab

        def get_vocab(self):
            return self.vocab

        def get_added_vocab(self):
            return {"<|im_end|>": 8}

    v = vocab_bytes(Tok({"Ġthe": 5, "âĢ": 7, "<|im_end|>": 8, "Ã¼ber": 9}))  # GPT-2 byte-level BPE
    assert v[b" the"] == 5 and v[bytes([0xE2, 0x80])] == 7 and v[b"<|im_end|>"] == 8 and v["über".encode()] == 9
    v = vocab_bytes(Tok({"▁the": 5, "<0x0A>": 6, "▁über": 9, "é": 10}))  # SentencePiece
    assert v[b" the"] == 5 and v[b"\n"] == 6 and v[" über".encode()] == 9 and v["é".encode()] == 10


def run_kd_example(release, *args, path_first=()):
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([*map(str, path_first), str(root)]))
    return subprocess.run([sys.executable, str(root / "scripts" / "kd_example.py"), str(release), *args],
                          capture_output=True, text=True, env=env, timeout=900)


def test_kd_example_trains_a_student_on_the_soft_targets_and_the_loss_falls(tmp_path):
    pytest.importorskip("torch")
    make_pool(tmp_path / "pool", 4, stand_in(4, 30, seed=3))
    run_export(tmp_path / "pool", tmp_path / "rel", ExportConfig(with_logprobs=True), progress=False)
    r = run_kd_example(tmp_path / "rel", "--student", "gru", "--steps", "6")
    assert r.returncode == 0, r.stderr
    losses = [float(line.split()[-1]) for line in r.stdout.splitlines() if line.startswith("step")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    run_export(tmp_path / "pool", tmp_path / "plain", ExportConfig(), progress=False)
    r = run_kd_example(tmp_path / "plain")
    assert r.returncode == 3 and "--with-logprobs" in r.stderr and "Traceback" not in r.stderr


def test_evol_answers_keep_logprobs_when_asked_and_export_them(tmp_path):
    from evol_support import make_input, responder

    from pipeline.context import RunContext
    from pipeline.records import get_meta
    from pipeline.stages.evol_instruct import EvolConfig, run_evol_instruct
    from pipeline.store import Dataset
    from pipeline.teacher.fake import FakeTeacher

    asked = []

    class LogprobTeacher(FakeTeacher):
        def chat(self, requests):
            out = super().chat(requests)
            for req, c in zip(requests, out):
                if req.sampling.logprobs:
                    asked.append(req.purpose)
                    c.logprobs = text_logprobs(c.text, req.sampling.logprobs)
            return out

    src = make_input(tmp_path / "in", ["Summarise the text.", "Name a colour."])
    ctx = RunContext(run_id="r", seed=3, teacher_factory=lambda: LogprobTeacher(responder), progress=False)
    run_evol_instruct(src, tmp_path / "evol", ctx, EvolConfig(rounds=1, logprobs=3))
    assert asked and set(asked) == {"evol:answer"}  # the answers, not the evolving or judging calls
    evolved = [r for r in Dataset(tmp_path / "evol").iter_rows() if r["round"] == 1]
    assert evolved and all(len(get_meta(r, "evol_instruct")["logprobs"]) == 5 for r in evolved)
    assert all(len(p[2]) == 3 for r in evolved for p in get_meta(r, "evol_instruct")["logprobs"])
    run_export(tmp_path / "evol", tmp_path / "rel", ExportConfig(with_logprobs=True), progress=False)
    targets = load_soft_targets(tmp_path / "rel", teacher_vocab(tmp_path / "rel"))
    assert {t.id for t in targets} == {r["id"] for r in evolved}  # the round-0 inputs have none
    assert all(t.top_ids.shape == (5, 3) for t in targets)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The embedded teacher's own tokenizer, read from its GGUF by transformers (gguf is in the test extra)."""
    from pipeline.kd import gguf_student
    from pipeline.models import smollm2_gguf
    return gguf_student(smollm2_gguf(), weights=False)[0]


def llama_cpp_python_shape(tok, texts: list[str], cut_at: int | None = None) -> list[list[dict]]:
    """`logprobs.content` lists as the embedded teacher (llama-cpp-python) returns them for `texts`: each token's
    text (`bytes` None), a top list with the token first, three other tokens and one empty token (a special token,
    which it renders as ""); at `cut_at` of the first text the generated token itself is empty (half a character)."""
    rows = []
    for n, text in enumerate(texts):
        content = []
        for pos, i in enumerate(tok.encode(text, add_special_tokens=False)):
            chosen = "" if n == 0 and pos == cut_at else tok.decode([i])
            others = [tok.decode([j]) for j in (i + 1, i + 2, i + 3)]
            top = [{"token": t, "logprob": -0.3 - j, "bytes": None} for j, t in enumerate([chosen, *others, ""])]
            content.append({"token": chosen, "logprob": -0.3, "bytes": None, "top_logprobs": top})
        rows.append(content)
    return rows


def test_loader_takes_the_teachers_real_tokenizer_and_refuses_others_in_one_line(tmp_path, smollm2_tokenizer):
    import json as _json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from pipeline.models import minilm_dir
    tok = smollm2_tokenizer
    texts = ["The capital of France is Paris, a city on the Seine.", "Blue is a primary colour of light.",
             "Bread needs flour, water, salt and yeast; knead it well."]
    make_pool(tmp_path / "pool", 3, llama_cpp_python_shape(tok, texts, cut_at=7))
    run_export(tmp_path / "pool", tmp_path / "rel", ExportConfig(with_logprobs=True), progress=False)
    targets = {t.id: t for t in load_soft_targets(tmp_path / "rel", tok)}
    assert len(targets) == 3
    first = next(t for t in targets.values() if t.cut)
    assert len(first.ids) == 7 and first.cut == len(tok.encode(texts[0], add_special_tokens=False)) - 7
    assert first.ids.tolist() == tok.encode(texts[0], add_special_tokens=False)[:7]  # the student's own ids
    for t in targets.values():
        assert (t.top_ids[:, 0] == t.ids).all()
        assert (t.top_ids[:, 4] == -1).all() and np.isinf(t.top_logprobs[:, 4]).all()  # the empty token left out
        assert (t.top_ids[:, :4] >= 0).all()
    rest = [t for t in targets.values() if not t.cut]
    assert sorted(tok.decode(t.ids) for t in rest) == sorted(texts[1:])

    minilm = AutoTokenizer.from_pretrained(str(minilm_dir()))  # BERT WordPiece: another vocabulary
    with pytest.raises(DatasetError, match="lacks .* of the teacher's tokens") as e:
        load_soft_targets(tmp_path / "rel", minilm)
    assert "\n" not in str(e.value)
    spec = _json.loads(tok.backend_tokenizer.to_str())
    spec["model"]["merges"] = spec["model"]["merges"][:1000]  # the same vocabulary, fewer merges: other splits
    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_json.dumps(spec)))
    with pytest.raises(DatasetError, match="splits the teacher's answers differently") as e:
        load_soft_targets(tmp_path / "rel", other)
    assert "\n" not in str(e.value) and "give the teacher's tokenizer" in str(e.value)


def test_kd_example_without_gguf_says_how_to_install_it_in_one_line(tmp_path):
    make_pool(tmp_path / "pool", 4, stand_in(4, 5, seed=4))
    run_export(tmp_path / "pool", tmp_path / "rel", ExportConfig(with_logprobs=True), progress=False)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "gguf.py").write_text("raise ImportError('No module named gguf')\n")  # as if gguf were not installed
    r = run_kd_example(tmp_path / "rel", "--student", "smollm2", path_first=[shadow])
    assert r.returncode == 2, r.stderr
    assert "pip install gguf==" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_logprobs_of_an_answer_a_later_stage_rewrote_are_not_exported(tmp_path):
    # Evol kept logprobs of its answer; Orca then answered the row again without them: the old logprobs
    # would teach the student another text, so the side file leaves the row without logprobs and says so.
    raws = stand_in(3, 12)
    rows = []
    for i, raw in enumerate(raws):
        lp = L.compact(raw, 20)
        text = b"".join(L.token_bytes(p[0]) for p in lp).decode("utf-8", errors="ignore")
        r = new_row(f"Question {i}?", "", text if i != 1 else "A new answer Orca wrote.", origin="evol")
        r["messages"] = build_messages(r["instruction"], "", r["output"], None)
        set_meta(r, "evol_instruct", {"logprobs": lp})
        if i == 2:  # a trace before the answer is allowed: the answer is inside the tokens' text
            set_meta(r, "evol_instruct", {"logprobs": [["<think>x</think>", -0.1, [["<think>x</think>", -0.1]]]] + lp})
        rows.append(r)
    w = DatasetWriter(tmp_path / "pool", "select")
    w.write_shard(0, rows)
    w.write_manifest(input=None)
    m = run_export(tmp_path / "pool", tmp_path / "rel", ExportConfig(with_logprobs=True), progress=False)
    assert m["logprobs"]["stale_rows"] == 1 and m["logprobs"]["files"][0]["stale_rows"] == 1
    side = pq.read_table(tmp_path / "rel" / L.side_file(m["logprobs"]["files"][0]["shard"])).to_pylist()
    by_id = {x["id"]: x for x in side}
    assert by_id[rows[1]["id"]]["token"] is None
    assert by_id[rows[0]["id"]]["token"] is not None and len(by_id[rows[2]["id"]]["token"]) == 13
