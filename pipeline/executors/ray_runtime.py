"""Importing Ray (an optional extra) and connecting to a cluster.

Without the extra, `--executor ray` fails at the CLI edge with one line that
says how to install it (`MissingExtra`, exit code 2), before any work starts.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import ConfigError, import_extra
from ..lifecycle import start_reaper

INSTALL_HINT = "--executor ray needs the ray extra: pip install 'distill[ray]'"


def import_ray():
    return import_extra("ray", INSTALL_HINT)


def require_ray() -> None:
    """Fail early (before any stage work) when `executor = 'ray'` cannot run here."""
    import_ray()


def connect(address: str | None = None):
    """The Ray module, connected: to `address` (or $RAY_ADDRESS), else a local cluster.

    Reuses a connection this process already has (tests start one `ray.init`
    per session; `distill run` keeps one across stages). A cluster we start
    here lives until the process exits (and dies with it, also on kill -9:
    pipeline.lifecycle.start_reaper): starting Ray costs seconds.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "logging_level": logging.WARNING}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        kwargs["address"] = address
    else:
        # a local cluster's agents can outlive a killed driver: a watcher kills them with it
        start_reaper()
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r} ({e}); "
                          "check run.ray_address / --ray-address (e.g. ray://head:10001 or auto)") from None
    return ray


def cluster_resources() -> dict[str, float]:
    return dict(import_ray().cluster_resources())


def task_error_cause(e: BaseException) -> BaseException:
    """The stage's own exception inside a RayTaskError (so the CLI prints its one line)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
