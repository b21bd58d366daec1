"""The run config: one TOML file, one section per stage, validated before any work starts.

`load_config(path)` returns a `Config`; every error names the file, the
section and field, and what is wrong, in one line each. Unknown keys are
errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunSection(Section):
    workdir: str = Field("work", description="folder that holds every run")
    run_id: str | None = Field(None, description="run folder name; default: the current run, or a new dated one")
    seed: int = Field(0, description="run seed; per-row randomness derives from (seed, record id, purpose)")
    shard_rows: int = Field(1000, gt=0, description="rows per output shard (the unit of restart)")
    limit: int | None = Field(None, gt=0, description="process at most this many input rows")
    executor: Literal["local", "ray"] = Field("local", description="where shards run")
    ray_address: str | None = Field(None, description="Ray cluster address for executor = 'ray'")
    allow_partial: bool = Field(False, description="stages may read an unfinished input's finished shards (the manifest records it)")
    min_novelty: float | None = Field(None, ge=0, description="a generating stage (Self-Instruct) stops generating once "
                                      "a shard adds fewer novel rows per 1k generated than this (novelty_monitor.py); "
                                      "the run goes on to a release; default: never")


class TeacherSection(Section):
    backend: Literal["llamacpp", "openai", "vllm", "openai_batch", "anthropic_batch", "batch_file"] = Field(
        "llamacpp", description="llamacpp (embedded CPU default), openai (any OpenAI-compatible server), vllm; "
        "batch APIs at half price: openai_batch, anthropic_batch, batch_file (vLLM run-batch files)")
    model: str | None = Field(None, description="model name (openai/vllm) or GGUF path (llamacpp); default: bundled SmolLM2-135M")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key (never the key itself)")
    concurrency: int = Field(64, gt=0, description="requests in flight (openai)")
    max_retries: int = Field(6, ge=0, description="retries on 429/5xx/timeouts/dropped connections")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout in seconds")
    rpm: int | None = Field(None, gt=0, description="requests-per-minute limit")
    tpm: int | None = Field(None, gt=0, description="tokens-per-minute limit")
    n_ctx: int = Field(2048, gt=0, description="context size (llamacpp)")
    n_threads: int | None = Field(None, gt=0, description="CPU threads (llamacpp), shared by the replicas; default: all cores")
    replicas: int | None = Field(None, gt=0, description="embedded server children (llamacpp), each with n_threads / replicas threads; default: one per core, up to 8 (scripts/bench_embedded.py)")
    restarts: int = Field(3, ge=0, description="restarts of a crashed embedded server child (llamacpp) before the stage stops with exit 4")
    cache: bool = Field(True, description="keep every answer in the SQLite response cache")
    cache_path: str | None = Field(None, description="cache file; default: <workdir>/teacher_cache.sqlite")
    vllm_args: dict[str, Any] = Field(default_factory=dict, description="extra vllm.LLM(...) arguments")
    context_tokens: int | None = Field(None, gt=0, description="the teacher's context window: a request whose estimated prompt tokens + max_tokens exceed it is dropped as too_long, never sent; default: n_ctx (llamacpp), vllm_args.max_model_len (vllm), else 131072")
    breaker_consecutive: int = Field(50, ge=0, description="stop the stage (exit 4) after this many requests in a row failed for a reason outside the row (auth, connection, timeout, 5xx, protocol); 0: off")
    breaker_rate: float = Field(0.5, gt=0, le=1, description="stop the stage (exit 4) when more than this share of the last breaker_window requests failed so; 1: off")
    breaker_window: int = Field(200, gt=0, description="requests the breaker_rate is measured over")
    batch_poll_s: float = Field(30.0, gt=0, description="batch backends: seconds between polls of the batches in flight")
    batch_wait_s: float | None = Field(None, ge=0, description="batch backends: stop waiting after this many seconds with exit 9 (batches in flight, rerun to collect); default: wait until they end")
    batch_retries: int = Field(2, ge=0, description="batch backends: new batches for lines that expired, were canceled or failed for a reason outside the row")
    batch_dir: str | None = Field(None, description="batch backends: the journal folder (batch ids, input and result files); default: <workdir>/teacher_batches")
    batch_max_requests: int | None = Field(None, gt=0, description="batch backends: requests per batch, at most the provider's limit (OpenAI 50,000; Anthropic 100,000)")
    batch_max_bytes: int | None = Field(None, gt=0, description="batch backends: bytes per batch, at most the provider's limit (OpenAI 200 MB; Anthropic 256 MB)")
    ping_timeout_s: float = Field(10.0, gt=0, description="timeout of the ping a teacher-using command sends to a network teacher before any work (one retry)")
    price_prompt_per_mtok: float | None = Field(None, ge=0, description="price of a million prompt tokens (your currency, e.g. USD), for `distill plan` and --max-cost; set both prices or neither")
    price_completion_per_mtok: float | None = Field(None, ge=0, description="price of a million completion tokens; set both prices or neither")
    batch_discount: float = Field(0.5, ge=0, lt=1, description="share taken off both prices for batch processing (OpenAI Batch, Anthropic Message Batches: 0.5)")

    @model_validator(mode="after")
    def _prices_in_pairs(self) -> "TeacherSection":
        if (self.price_prompt_per_mtok is None) != (self.price_completion_per_mtok is None):
            raise ValueError("set both price_prompt_per_mtok and price_completion_per_mtok, or neither")
        return self


class Config(Section):
    run: RunSection = Field(default_factory=RunSection)
    teacher: TeacherSection = Field(default_factory=TeacherSection)
    # Stage sections are plain tables here; each stage validates its own
    # section with its own model (see `stage_config`), so a stage owns its knobs.
    self_instruct: dict[str, Any] = Field(default_factory=dict)
    evol_instruct: dict[str, Any] = Field(default_factory=dict)
    hard: dict[str, Any] = Field(default_factory=dict)
    orca: dict[str, Any] = Field(default_factory=dict)
    verify: dict[str, Any] = Field(default_factory=dict)  # `distill orca verify`; model in pipeline/stages/orca/verify/config.py
    minhash: dict[str, Any] = Field(default_factory=dict)
    semdedup: dict[str, Any] = Field(default_factory=dict)
    score: dict[str, Any] = Field(default_factory=dict)
    select: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)
    pipeline: dict[str, Any] = Field(default_factory=dict)
    refresh: dict[str, Any] = Field(default_factory=dict)  # `distill refresh`; model in pipeline/refresh/config.py

    source: str | None = Field(None, exclude=True)


def _format_errors(source: str, err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = f"[{prefix}] {loc}" if prefix else loc
        lines.append(f"{source}: {where}: {e['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read and validate a TOML config (or the defaults when `path` is None)."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        data = read_toml(p, f"config file not found (write a starter with `distill config init {p}`)")
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update({k: v for k, v in values.items() if v is not None})
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e)) from None
    cfg.source = source
    return cfg


def read_toml(p: Path, missing: str, *, error: type[Exception] = ConfigError, label: str | None = None) -> dict[str, Any]:
    """A TOML file as a dict; `error` naming it (`label`, default the path) when it is absent (`missing` says
    the fix) or invalid."""
    label = label or str(p)
    if p.is_dir():
        raise error(f"{label}: is a folder, not a TOML file")
    if not p.is_file():
        raise error(f"{label}: {missing}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8-sig"))  # -sig: a BOM, as some Windows editors write
    except tomllib.TOMLDecodeError as e:
        raise error(f"{label}: not valid TOML: {e}") from None
    except UnicodeDecodeError as e:
        raise error(f"{label}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except RecursionError:
        raise error(f"{label}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as e:
        raise error(f"{label}: cannot read the file ({e.strerror or e})") from None


def stage_config(cfg: Config, section: str, model: type[BaseModel], /, **overrides: Any) -> Any:
    """Validate one stage section with that stage's model, CLI overrides on top."""
    data = dict(getattr(cfg, section))
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(cfg.source or "<defaults>", e, prefix=section)) from None


def check_sections(cfg: Config, models: dict[str, type[BaseModel] | None]) -> dict[str, Any]:
    """Every section in `models` validated at once (a section with no model is None): one ConfigError
    listing each bad key of every section, one line each, so one fix-and-rerun finds them all."""
    sections: dict[str, Any] = {}
    problems: list[str] = []
    for name, model in models.items():
        if model is None:
            sections[name] = None
            continue
        try:
            sections[name] = stage_config(cfg, name, model)
        except ConfigError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError("\n".join(problems))
    return sections


def referenced_path(cfg: Config, section: str, key: str, value: str | Path, *,
                    kind: Literal["file", "dir", "any"] = "file") -> Path:
    """`value`, a path named by `[section] key`, when it exists as that kind; else a ConfigError naming
    the config, the section, the key and the path."""
    p = Path(value).expanduser()
    found = {"file": p.is_file, "dir": p.is_dir, "any": p.exists}[kind]()
    if not found:
        what = {"file": "no such file", "dir": "no such folder", "any": "no such file or folder"}[kind]
        if kind != "any" and p.exists():
            what = "a folder, not a file" if kind == "file" else "a file, not a folder"
        raise ConfigError(f"{cfg.source or '<defaults>'}: [{section}] {key}: {value}: {what}")
    return p
