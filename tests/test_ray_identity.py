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
