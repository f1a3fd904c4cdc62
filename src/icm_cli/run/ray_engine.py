"""`icm label --engine ray`: the search on the driver, the transfer as a Ray Data pipeline.

The driver checks and indexes the input, labels the core(s) with the configured backend and
computes the transfer's calibration, exactly as a local run does (same seed, same core, same
centres). Then Ray Data reads the rows (a file, a directory of shards, an object-store URL;
JSONL, CSV or Parquet), and `map_batches` hands them to a pool of actors, each of which builds
the configured backend once (vLLM with a GPU each on a GPU cluster, hf on CPU) and labels its
batches with the cores' labels as context and the run's calibration. A row's label depends only
on its prompt and the calibration, so the labels are the local run's. Each batch is written by
its actor as one shard in OUT_DIR, atomically; a re-run of the same command skips the rows whose
ids the finished shards hold, so nothing finished is redone and nothing is written twice.

OUT_DIR holds `part-*.jsonl` (the rows, with label, confidence and icm_source), `icm-summary.json`
when the run is complete, and, while it runs, `icm-checkpoint/` (the driver's search).
`ray.init()` joins the cluster named by RAY_ADDRESS, else starts a local one.

Here the driver's side (`RayRun`); the input as Ray reads it is ray_input.py, OUT_DIR's shards
ray_shards.py, the actors and the pipeline ray_actors.py, the cluster ray_cluster.py (their names
are imported from here too).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

from ..foundation.config import Config
from ..foundation.errors import InputError
from ..data.labels_io import row_id
from .label_job import LabelJob
from .ray_actors import RayTally, ShardLabeller, Shipped, run_transfer
from .ray_cluster import check_local_cluster, require_ray, start_ray
from .row_emitter import HeldLabels, label_row, output_row
from .run_records import Progress
from .ray_input import input_kind, is_remote, read_rows
from .ray_shards import CHECKPOINT, CORE_SHARD, SUMMARY, check_out_dir, finished_ids, write_shard
from ..data.row_index import hash64
from ..algorithm.tasks import SOURCE_FIELD

__all__ = [
    "CHECKPOINT", "CORE_SHARD", "SUMMARY", "RayRun", "RayTally", "ShardLabeller", "Shipped", "check_out_dir",
    "driver_device", "finished_ids", "gpu_actors_on_a_cpu_driver", "input_kind", "is_remote", "output_row",
    "read_rows", "run_transfer", "start_ray", "write_shard",
]


# ---- the whole run, on the driver -------------------------------------------------------------


def transfer_progress(tally: RayTally, rows: int, skipped: int, cores: int) -> Progress:
    """What the progress view shows of the actors' transfer: rows, not tokens (the actors count
    their own tokens; tokens_computed 0 shows as "-")."""
    left = rows - skipped - tally.rows
    eta = left * tally.seconds / tally.rows if tally.rows else None
    return Progress("transfer", max(cores - 1, 0), cores, None, skipped + tally.rows, rows, tally.rows,
                    rows - skipped, 0, tally.seconds, tally.seconds, eta, None)


def _held_rows(run: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each row a core holds, once (a fixed row is in every core), then the fixed rows no core
    holds (past core.fixed_tokens), read again: (row, fields)."""
    seen: set[int] = set()
    for core in run.plan.cores:
        for r, fields in zip(core.rows, core.fields):
            if r not in seen:
                seen.add(r)
                yield r, fields
    per_row = run.shape.per_row
    rest = sorted({i // per_row for i in run.plan.fixed} - seen)
    for start in range(0, len(rest), 4096):
        block = rest[start:start + 4096]
        yield from zip(block, (row.fields for row in run.index.read(block)))


def _torch_threads() -> int:
    import sys

    if "torch" not in sys.modules:
        return 0  # a server backend: no kernels here
    import torch

    return torch.get_num_threads()


def driver_device(backend: Any) -> str:
    device = getattr(backend, "device", None)
    return getattr(device, "type", None) or "cpu"


def gpu_actors_on_a_cpu_driver(config: Config, backend: Any) -> bool:
    """GPU actors planned by a driver that computed on a CPU (a cluster's head node often has no
    GPU): the actors then run the same weights in their GPU's own dtype, not the driver's."""
    return config.ray.gpus_per_actor > 0 and driver_device(backend) != "cuda"


def _resolved(config: Config, backend: Any) -> Config:
    """The config with `dtype: auto` replaced by what the driver's backend chose: an actor on
    another machine must not choose differently (unless it runs on a GPU the driver did not have)."""
    import dataclasses

    dtype = getattr(getattr(backend, "model", None), "dtype", None)
    if config.backend.dtype != "auto" or dtype is None or gpu_actors_on_a_cpu_driver(config, backend):
        return config
    name = str(dtype).replace("torch.", "")
    return dataclasses.replace(config, backend=dataclasses.replace(config.backend, dtype=name))


class RayRun:
    """One `--engine ray` run: search and calibration here, transfer on the cluster."""

    def __init__(self, run_input: Any, job: LabelJob, log: Any):
        """`job.out` is the shards' directory, checked before (ray_labelling.run_ray)."""
        self.run_input, self.config, self.out, self.data = run_input, job.config, job.out, job.data
        self.label_field, self.confidence_field = job.label_field, job.confidence_field
        self.log, self.quiet = log, job.quiet
        self.kind = input_kind(self.data)
        self.ray: Any = None  # a joined cluster, reached at the checks

    def check(self) -> None:
        """What the Ray engine cannot do, said before any model loads; a joined cluster is reached here."""
        task = self.config.task
        require_ray()
        if task.id_field is None:
            raise InputError("--engine ray matches rows across re-runs by their id: set task.id_field")
        if task.type == "claims" and task.group_field and task.key_field:
            raise InputError("--engine ray labels rows independently; claims with consistency groups "
                             "(task.group_field + task.key_field) run locally (drop --engine ray)")
        if self.kind == "unknown":
            raise InputError(f"{self.data}: --engine ray reads .jsonl, .csv or .parquet files, a directory of "
                             f"them, or such a URL")
        if os.environ.get("RAY_ADDRESS"):
            # Reach a joined cluster (and read its size) now: a wrong address must not cost the search.
            self.ray = start_ray(self.config, self.quiet, self.log)
        else:
            check_local_cluster(self.config.ray)  # started after the search: it would only sit idle in it

    def run(self, backend: Any, checkpoint: Any, state: Any, view: Any) -> Any:
        from .runner import Run, RunHooks, RunState

        run = Run(self.run_input, self.config, backend, RunHooks(on_progress=view, recorder=checkpoint))
        resume = state or RunState()
        transfer, centres = run.prepare(resume)
        run.check(transfer, centres)  # the signal check reads its sample here, on the driver
        several = len(run.outcomes) > 1
        fixed, core_hashes = self._core_rows(run, several)
        skip = finished_ids(self.out, self.config.task.id_field)
        import numpy as np

        skip = np.unique(np.concatenate([skip, np.array(core_hashes, dtype=np.int64)]))
        identity, threads, config = backend.identity, _torch_threads(), _resolved(self.config, backend)
        differ = gpu_actors_on_a_cpu_driver(self.config, backend)
        if differ:
            self.log("ray: the search ran on this machine's CPU and the actors run on GPUs: their dtype is their "
                     "own, so transferred labels may differ from a local run's by rounding (run the driver on "
                     "a GPU node, e.g. ray job submit --entrypoint-num-gpus 1, to match exactly)")
        backend.close()  # the actors build their own; the driver's is not needed any more
        shipped = Shipped(config, transfer.contexts[:transfer.cores], len(transfer.contexts) > transfer.cores,
                          centres, skip, fixed, self.label_field,
                          self.confidence_field, str(self.out.resolve()), self.kind, identity, threads, differ,
                          transfer.prior.shares if transfer.prior is not None else None, transfer.weights)
        ray = self.ray or start_ray(self.config, self.quiet, self.log)
        self.log(f"ray: labelling the rows outside the core on {self.config.ray.actors} actor(s) "
                 f"({len(skip):,} rows already labelled)")
        rows, cores = self.run_input.index.count, len(run.plan.cores)

        def progress(tally: RayTally) -> None:
            # The live report goes on into the transfer, as a local run's does: left at the search's
            # last step, it ended every run on "rows done=0".
            view(transfer_progress(tally, rows, len(skip), cores))

        start = time.monotonic()
        try:
            tally = run_transfer(ray, self.data, shipped, self.run_input.index.fields, progress)
        finally:
            ray.shutdown()  # a local cluster ends with the run; a joined one is only left
        summary = run.finish()
        return self._complete(summary, tally, time.monotonic() - start)

    def _core_rows(self, run: Any, several: bool) -> tuple[dict[str, dict[int, tuple[int, tuple[float, ...]]]], list[int]]:
        """Write the rows the search labelled whole and those a person labelled (--fixed) (one
        shard); return the labels of the rows it labelled in part (a pair's one order), for the
        actors to hold fixed."""
        shape, id_field = self.run_input.shape, self.config.task.id_field
        fixed: dict[str, dict[int, tuple[int, tuple[float, ...]]]] = {}
        rows, hashes = [], []
        held = HeldLabels(run.core_labels, run.core_scores, run.plan.fixed)
        for r, fields in _held_rows(run):
            ids = range(r * shape.per_row, (r + 1) * shape.per_row)
            name = row_id(fields[id_field], "core", id_field)
            if all(run.core_labels.get(i) is not None for i in ids):
                label = label_row(shape, r, fields, {}, held, several)
                rows.append(output_row(fields, label, self.label_field, self.confidence_field, several))
                hashes.append(hash64(name))
            else:
                fixed[name] = {i - r * shape.per_row: (run.core_labels[i], run.core_scores[i])
                               for i in ids if run.core_labels.get(i) is not None}
        if rows:
            write_shard(self.out / CORE_SHARD, rows)
        return fixed, hashes

    def _complete(self, summary: Any, tally: RayTally, seconds: float) -> Any:
        """Check every row is in exactly one shard, count the labels, write the summary."""
        id_field = self.config.task.id_field
        seen = finished_ids(self.out, id_field)
        import numpy as np

        if len(seen) != self.run_input.index.count or (len(seen) > 1 and np.any(seen[1:] == seen[:-1])):
            raise InputError(f"{self.out}: the shards hold {len(seen):,} rows for {self.run_input.index.count:,} "
                             f"input rows; Ray read other rows than the driver (did the input change?)")
        counts: dict[str, int] = {}
        core = human = 0
        for shard in sorted(self.out.glob("part-*.jsonl")):
            with open(shard, "rb") as f:
                for line in f:
                    row = json.loads(line)
                    counts[row[self.label_field]] = counts.get(row[self.label_field], 0) + 1
                    core += row[SOURCE_FIELD] == "core"
                    human += row[SOURCE_FIELD] == "human"
        summary.label_counts = counts
        summary.core_rows, summary.transfer_rows = core, len(seen) - core - human
        if human:
            summary.fixed_rows = human
        summary.transfer_s = round(seconds, 2)
        summary.wall_time_s = round(summary.search_s + summary.check_s + seconds, 2)
        from ..data.output import atomic_write_text, summary_text

        doc = {**summary.to_json(), "engine": "ray", "shards": len(list(self.out.glob("part-*.jsonl"))),
               "actors": self.config.ray.actors, "rows_this_run": tally.rows}
        atomic_write_text(self.out / SUMMARY, summary_text(doc))
        return summary
