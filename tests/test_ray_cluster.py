"""Reaching and sizing the Ray cluster `--engine ray` runs on.

Whether a cluster can hold the transfer's actor pool and still read the rows: Ray does not
refuse a pool it cannot place: Ray Data waits for the resources, for ever on a fixed cluster
(measured with Ray 2.60: 2 actors of 1 CPU on a 2-CPU cluster never read a row, the read task
finding no CPU). A local cluster is refused before the search (tests/test_bad_input.py); a joined
one, which may autoscale, is reached at the checks and told in the log."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from icm_cli.foundation.config import RayConfig
from icm_cli.run.ray_cluster import _init_failure, pool_misfit, unanswered


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


@pytest.mark.slow  # a local Ray cluster up and down (14 s); test_bad_input's RAY_ADDRESS=auto case reaches at the checks fast
def test_a_joined_cluster_is_reached_and_sized_at_the_checks_before_any_model_loads(tmp_path, monkeypatch):
    """RAY_ADDRESS=local makes ray.init start a cluster of this machine's CPUs, as joining one would
    find it: icm does not size it, so the pool is checked against what the cluster reports, in
    --dry-run too (no model is loaded there)."""
    ray = pytest.importorskip("ray")
    from typer.testing import CliRunner

    from icm_cli.backends import loading
    from icm_cli.cli import app

    def refuse(*args, **kwargs):
        raise AssertionError("the cluster must be reached before any model loads")

    monkeypatch.setattr(loading, "load_backend", refuse)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "local")
    Path("c.yaml").write_text('task:\n  type: classification\n  template: "{text}"\n  labels: [a, b]\n  id_field: id\n')
    Path("d.jsonl").write_text('{"id": 1, "text": "x"}\n{"id": 2, "text": "y"}\n')
    cpus = os.cpu_count() or 1
    try:
        result = CliRunner().invoke(app, ["label", "d.jsonl", "-c", "c.yaml", "-o", "shards", "--engine", "ray",
                                          "--dry-run", "--set", f"ray.actors={cpus}"])
    finally:
        ray.shutdown()
    assert result.exit_code == 0, result.output
    assert (f"icm: ray: {cpus} actor(s) x 1 CPU plus 1 for reading the rows need {cpus + 1} CPUs, the cluster has {cpus} "
            "now; the transfer will wait until the cluster grows to hold the pool") in " ".join(result.output.split())
    assert not Path("shards").exists()


def test_a_failed_join_names_the_reason_ray_buried_in_a_traceback_text():
    """The shape Ray 2.60 raised joining a `ray start` cluster whose token the driver lacked
    (measured: a ConnectionError from a RuntimeError holding the last attempt's traceback as text)."""
    inner = RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                         '  File "node.py", line 990, in _init_gcs_client\n    client.check_alive()\n'
                         "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: token is missing\n")
    try:
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as e:
        joined = e
    assert _init_failure(joined) == ("Failed to connect to Ray cluster at 10.0.0.1:6379: "
                                     "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: token is missing")
    assert _init_failure(ConnectionError("Could not find any running Ray instance.")) == (
        "Could not find any running Ray instance.")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_nothing_answers_at_is_named_before_rays_own_twenty_tries():
    """ray.init spent 822 s (twenty tries) on an address nothing answered at; the probe says so at once."""
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        assert unanswered(address) == f"nothing answers at 127.0.0.1:{port} (Connection refused)"
    assert unanswered("no-such-host.invalid:6379").startswith("nothing answers at no-such-host.invalid:6379 (")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert unanswered(f"127.0.0.1:{listening.getsockname()[1]}") is None  # answered: the rest is ray.init's
    for ray_resolves in ("auto", "local", "anyscale://my-cluster", "127.0.0.1"):
        assert unanswered(ray_resolves) is None
