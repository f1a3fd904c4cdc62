"""The Ray cluster `--engine ray` runs on: Ray installed, the cluster reached, the pool sized.

Ray does not refuse an actor pool a cluster cannot place; it waits (measured with Ray 2.60: two
1-CPU actors on a 2-CPU cluster never read a row, Ray Data's read task finding no CPU). So a local
cluster, whose size the config fixes, is checked before the search; a joined one (RAY_ADDRESS) is
reached at the run's checks and, as it may autoscale, a pool it cannot hold yet is only named.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from typing import Any, Optional

from ..foundation.config import Config, RayConfig
from ..foundation.errors import BackendError, InputError, first_line


def require_ray() -> None:
    """Ray is an extra: say so before the search, not after its minutes are spent."""
    if importlib.util.find_spec("ray") is None:
        raise InputError("--engine ray needs Ray: pip install 'icm-cli[ray]'")


# Ray Data's read tasks ask for one CPU each: a pool that takes every CPU leaves the rows unread.
READ_TASK_CPUS = 1.0


def pool_misfit(rc: RayConfig, cpus: float, gpus: float) -> Optional[str]:
    """Why a cluster of `cpus` and `gpus` cannot hold the actor pool and read the rows too, or
    None. Ray does not refuse such a pool: it waits for resources, for ever on a fixed cluster."""
    need = rc.actors * rc.cpus_per_actor + READ_TASK_CPUS
    if need > cpus:
        return (f"{rc.actors} actor(s) x {rc.cpus_per_actor:g} CPU plus {READ_TASK_CPUS:g} for reading the rows "
                f"need {need:g} CPUs, the cluster has {cpus:g}")
    need = rc.actors * rc.gpus_per_actor
    if need > gpus:
        return f"{rc.actors} actor(s) x {rc.gpus_per_actor:g} GPU need {need:g} GPU{'s' if need > 1 else ''}, the cluster has {gpus:g}"
    return None


def local_cpus(rc: RayConfig) -> int:
    """The CPUs of the local cluster icm starts: the one number its check and its start share."""
    return rc.cpus or os.cpu_count() or 1


def local_gpus() -> int:
    """The GPUs a local Ray cluster finds (it reads the same CUDA_VISIBLE_DEVICES torch does)."""
    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return torch.cuda.device_count()


def check_local_cluster(rc: RayConfig) -> None:
    """A local cluster's size is known before the search: refuse a pool it cannot run."""
    misfit = pool_misfit(rc, local_cpus(rc), local_gpus() if rc.gpus_per_actor else 0)
    if misfit:
        raise InputError(f"--engine ray on a local cluster (RAY_ADDRESS unset): {misfit}, so Ray would wait for "
                         f"ever; set ray.actors, ray.cpus_per_actor, ray.gpus_per_actor or ray.cpus to fit")


# Long enough for a SYN a far network drops once and resends (Linux resends after 1 s, then 3 s).
PROBE_SECONDS = 10.0


def unanswered(address: str, timeout: float = PROBE_SECONDS) -> Optional[str]:
    """Why nothing answers at a host:port (or ray://host:port) RAY_ADDRESS, or None where something
    does or the address is Ray's to resolve (auto, local). ray.init tries an address nothing answers
    at twenty times, about 41 s each (822 s measured with Ray 2.60), before it says so."""
    scheme, _, target = address.rpartition("://")
    if scheme not in ("", "ray") or address in ("auto", "local"):
        return None
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:  # refused, timed out, no such host
        return f"nothing answers at {host}:{port} ({e.strerror or str(e) or type(e).__name__})"
    return None


def start_ray(config: Config, quiet: bool, log: Any) -> Any:
    """Join the cluster RAY_ADDRESS names, or start a local one sized by the config (after
    RayRun.check, which said whether Ray is installed)."""
    import ray
    import ray.data

    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": not quiet, "include_dashboard": False,
                               "ignore_reinit_error": True}
    address = os.environ.get("RAY_ADDRESS")
    silent = unanswered(address) if address else None
    if silent:
        raise BackendError(f"--engine ray could not join the Ray cluster at RAY_ADDRESS={address}: {silent}")
    if not address:
        options.update(num_cpus=local_cpus(config.ray),
                       object_store_memory=config.ray.object_store_mib * 2**20)
    try:
        ray.init(**options)
    except Exception as e:  # ConnectionError, RuntimeError or Ray's own, the reason at the chain's end
        what = f"join the Ray cluster at RAY_ADDRESS={address}" if address else "start a local Ray cluster"
        raise BackendError(f"--engine ray could not {what}: {_init_failure(e)[:400]}") from None
    if address:
        # A joined cluster may autoscale, so a pool bigger than it is now is said, not refused.
        have = ray.cluster_resources()
        misfit = pool_misfit(config.ray, have.get("CPU", 0), have.get("GPU", 0))
        if misfit:
            log(f"ray: {misfit} now; the transfer will wait until the cluster grows to hold the pool")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.preserve_order = False
    # Ray Data's console says that the progress bars icm turned off are off, and when each dataset
    # has finished; icm's progress report says how far the transfer is. Its other warnings still show.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
    return ray


def _init_failure(e: BaseException) -> str:
    """ray.init's error in one line: its own message, and the reason at the end of the chain
    (Ray writes the last connection attempt's traceback into a RuntimeError's text: its last line)."""
    root = e
    while root.__cause__ is not None:
        root = root.__cause__
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    reason = lines[-1] if "Traceback (most recent call last)" in str(root) and lines else first_line(root)
    return first_line(e) if root is e and reason == first_line(e) else f"{first_line(e)}: {reason}"
