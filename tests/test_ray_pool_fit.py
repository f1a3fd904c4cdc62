"""Whether a Ray cluster can hold the transfer's actor pool and still read the rows. Ray does not
refuse a pool it cannot place: Ray Data waits for the resources, for ever on a fixed cluster
(measured with Ray 2.60: 2 actors of 1 CPU on a 2-CPU cluster never read a row, the read task
finding no CPU). A local cluster is refused before the search (tests/test_bad_input.py); a joined
one, which may autoscale, is told in the log."""

from __future__ import annotations

import os

import pytest

from icm_cli.foundation.config import Config, RayConfig
from icm_cli.run.ray_engine import pool_misfit, start_ray


@pytest.mark.parametrize(("pool", "cpus", "gpus", "fits"), [
    (RayConfig(), 2, 0, True),                                           # the default on CI's 2 cores
    (RayConfig(actors=2), 2, 0, False),                                  # the read task has no CPU left
    (RayConfig(actors=2, cpus_per_actor=0.5), 2, 0, True),
    (RayConfig(cpus_per_actor=1.5), 2, 0, False),
    (RayConfig(), 1, 0, False),                                          # one core: the default cannot run
    (RayConfig(actors=2, gpus_per_actor=1), 8, 1, False),
    (RayConfig(actors=2, gpus_per_actor=0.5), 8, 1, True),
    (RayConfig(actors=4, cpus_per_actor=1, gpus_per_actor=1), 5, 4, True),
])
def test_a_pool_fits_where_its_actors_and_one_read_task_do(pool, cpus, gpus, fits):
    assert (pool_misfit(pool, cpus, gpus) is None) == fits


def test_a_joined_cluster_too_small_for_the_pool_is_named_in_the_log(monkeypatch):
    pytest.importorskip("ray")
    # RAY_ADDRESS=local makes ray.init start a cluster of this machine's CPUs, as joining one would
    # find it: icm does not size it, so the pool is checked against what the cluster reports.
    monkeypatch.setenv("RAY_ADDRESS", "local")
    cpus = os.cpu_count() or 1
    lines: list[str] = []
    ray = start_ray(Config(ray=RayConfig(actors=cpus)), True, lines.append)
    ray.shutdown()
    assert lines == [f"ray: {cpus} actor(s) x 1 CPU plus 1 for reading the rows need {cpus + 1} CPUs, the cluster "
                     f"has {cpus} now; the transfer waits until the cluster grows to hold it"]
