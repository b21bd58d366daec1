"""Decontamination: drop rows that share a word n-gram with an evaluation set.

Evaluation files are JSON (an array, or an object holding one), JSONL,
Parquet or plain text. Every string in a record (recursively, lists too) is
one evaluation text; in plain text every paragraph and every line is one.
Texts are lowercased and split into word tokens (`\\w+`); a row is
contaminated when any of its checked fields contains one of their n-grams
(13 words by default as lm-eval-harness and NeMo do; 8 as Tulu 3 does).

Evaluation texts shorter than n words (many benchmark questions are) would
otherwise never match; those of at least `min_tokens` words match as a whole
word sequence instead. Shorter ones are skipped and counted.

The drop detail names the benchmark file, the item, the field and the shared
words, so a report can say which benchmark each drop hit.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import InputFileError

_TOKEN = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall((text or "").lower())


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _strings(v)


def read_eval_items(path: Path) -> list[list[str]]:
    """The evaluation items of one file, each as its list of texts."""
    if not path.is_file():
        raise InputFileError(f"{path}: decontamination file not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            items = []
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        items.append(list(_strings(json.loads(line))))
                    except json.JSONDecodeError as e:
                        raise InputFileError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            return items
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {"data": [...]} or a single record
                lists = [v for v in data.values() if isinstance(v, list)]
                data = lists[0] if len(lists) == 1 else [data]
            if not isinstance(data, list):
                data = [data]
            return [list(_strings(x)) for x in data]
        if suffix == ".parquet":
            import pyarrow.parquet as pq
            return [list(_strings(r)) for r in pq.read_table(path).to_pylist()]
        text = path.read_text(encoding="utf-8")
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not UTF-8 text; give JSON, JSONL, Parquet or plain text") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read ({e})") from None
    except Exception as e:  # pyarrow's errors for a corrupt Parquet file
        raise InputFileError(f"{path}: unreadable ({e})") from None
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [[p, *[ln for ln in p.splitlines() if ln.strip()]] for p in paragraphs]


@dataclass(frozen=True)
class Hit:
    file: str
    item: int
    field: str
    ngram: str

    def detail(self) -> str:
        return f"{self.file} item {self.item}: {self.field} shares {self.ngram!r}"


class Decontaminator:
    """An index of every evaluation n-gram; `check(row)` returns the first hit or None."""

    def __init__(self, files: list[str | Path], n: int = 13, min_tokens: int = 8,
                 fields: tuple[str, ...] = ("instruction", "input", "output")):
        self.n = n
        self.min_tokens = min(min_tokens, n)
        self.fields = fields
        self.files = [Path(f) for f in files]
        self.grams: dict[int, dict[tuple[str, ...], tuple[int, int]]] = {}  # length -> gram -> (file, item)
        self.stats: dict[str, dict[str, int]] = {}
        for fi, path in enumerate(self.files):
            items = read_eval_items(path)
            counts: Counter = Counter(items=len(items))
            for ii, texts in enumerate(items):
                for text in texts:
                    toks = tokens(text)
                    if len(toks) >= n:
                        table = self.grams.setdefault(n, {})
                        for i in range(len(toks) - n + 1):
                            table.setdefault(tuple(toks[i:i + n]), (fi, ii))
                        counts["ngram_texts"] += 1
                    elif len(toks) >= self.min_tokens:
                        self.grams.setdefault(len(toks), {}).setdefault(tuple(toks), (fi, ii))
                        counts["whole_texts"] += 1
                    elif toks:
                        counts["too_short_texts"] += 1
            self.stats[path.name] = dict(counts)
        self.lengths = sorted(self.grams)

    def __bool__(self) -> bool:
        return bool(self.files)

    def check(self, row: dict[str, Any]) -> Hit | None:
        for field in self.fields:
            toks = tokens(row.get(field) or "")
            for k in self.lengths:
                if len(toks) < k:
                    break
                table = self.grams[k]
                for i in range(len(toks) - k + 1):
                    where = table.get(tuple(toks[i:i + k]))
                    if where is not None:
                        fi, ii = where
                        return Hit(self.files[fi].name, ii, field, " ".join(toks[i:i + k]))
        return None

    def summary(self) -> dict[str, Any]:
        return {"files": [str(p) for p in self.files], "n": self.n, "min_tokens": self.min_tokens,
                "fields": list(self.fields), "per_file": self.stats,
                "ngrams_indexed": sum(len(t) for t in self.grams.values())}
