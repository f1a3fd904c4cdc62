"""Which actors the Ray engine accepts: the driver's model, dtype and device; or, where GPU actors
were planned by a driver that computed on a CPU, the driver's weights in the GPU's own dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from icm_cli.foundation.config import Config, RayConfig
from icm_cli.run.ray_engine import Shipped, ShardLabeller, gpu_actors_on_a_cpu_driver

DRIVER = "/models/m (files abc123) [float32, cpu]"


class Loaded:
    def __init__(self, identity: str):
        self.identity = identity


def shipped(devices_differ: bool) -> Shipped:
    return Shipped(Config(), [()], False, None, np.array([], dtype=np.int64), {}, "label", "confidence", "/tmp",
                   "jsonl", DRIVER, 0, devices_differ)


@pytest.mark.parametrize(("actor", "differ", "accepted"), [
    (DRIVER, False, True),
    ("/models/m (files abc123) [bfloat16, cuda]", False, False),  # same weights, another device: refused
    ("/models/m (files abc123) [bfloat16, cuda]", True, True),    # ... unless the driver planned GPU actors
    ("/models/other (files fff000) [bfloat16, cuda]", True, False),  # other weights: always refused
])
def test_actor_identity(monkeypatch, actor, differ, accepted):
    import icm_cli.backends.loading as loading

    monkeypatch.setattr(loading, "load_backend", lambda config: Loaded(actor))
    if accepted:
        ShardLabeller(shipped(differ))
    else:
        with pytest.raises(RuntimeError, match="this actor loaded"):
            ShardLabeller(shipped(differ))


class Driver:
    def __init__(self, device: str):
        import torch

        self.device = torch.device(device)


def test_gpu_actors_are_told_apart_from_a_cpu_driver_only_when_planned():
    planned = dataclasses.replace(Config(), ray=RayConfig(gpus_per_actor=1))
    assert gpu_actors_on_a_cpu_driver(planned, Driver("cpu"))
    assert not gpu_actors_on_a_cpu_driver(Config(), Driver("cpu"))
    assert not gpu_actors_on_a_cpu_driver(planned, Driver("cuda"))  # the driver searched on a GPU itself


def test_the_progress_view_follows_the_actors_transfer_to_its_last_row():
    """The driver's view is fed the actors' tally, so its last line (printed as it closes, where
    stderr is not a terminal) is the finished transfer, not the search's 'rows done=0'."""
    import io

    from rich.console import Console

    from icm_cli.commands.progress import ProgressView
    from icm_cli.run.ray_actors import RayTally
    from icm_cli.run.ray_engine import transfer_progress

    out = io.StringIO()
    with ProgressView(Console(file=out, width=300), ("negative", "positive"), every=3600) as view:
        view(transfer_progress(RayTally(rows=40, seconds=10.0), 120, 5, 1))
        middle = transfer_progress(RayTally(rows=40, seconds=10.0), 120, 5, 1)
        assert middle.eta == 75 * 10.0 / 40 and middle.rows_done == 45
        view(transfer_progress(RayTally(rows=115, seconds=23.0), 120, 5, 1))
    last = out.getvalue().strip().splitlines()[-1]
    assert last == "phase=transfer  transferred=115/115  rows/s=5.0  rows done=120/120  tokens/s=-  ETA=0s"
