"""The actors of `--engine ray`: what the driver ships them once (`Shipped`), the actor that builds
the backend and labels a batch as the driver would, writing it as one shard (`ShardLabeller`),
and the Ray Data pipeline that feeds them (`run_transfer`)."""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..backends.models import same_weights
from ..foundation.config import Config
from ..data.jsonl_source import parse_line
from ..data.labels_io import row_id
from .ray_input import read_rows
from .ray_shards import write_shard
from ..data.row_index import hash64


@dataclass(frozen=True)
class Shipped:
    """What every actor needs to label rows as the driver would: small, sent once."""

    config: Config
    contexts: list[tuple[str, ...]]  # the cores' demonstrations
    zero_shot: bool  # each row's zero-shot reading averaged in (transfer.zero_shot)
    centres: Optional[list[list[float]]]
    skip: Any  # numpy int64, sorted: hashes of the ids that are labelled already (core rows, finished shards)
    fixed: dict[str, dict[int, tuple[int, tuple[float, ...]]]]  # row id -> example k -> a core label and scores
    label_field: str
    confidence_field: str
    out_dir: str
    input_kind: str  # "jsonl": rows arrive as lines of text; else as Arrow rows
    identity: str  # the driver's model, dtype and device: every actor must load the same
    threads: int  # the driver's torch threads: CPU kernels round differently with another count
    # ray.gpus_per_actor > 0 and the driver computed on another kind of device (a head node with
    # no GPU): actors must load the same weights, and run them in their own device's dtype.
    devices_differ: bool = False
    prior: Optional[tuple[float, ...]] = None  # the class shares every reading takes (class_shares.py)
    weights: Optional[list[float]] = None  # each reading's weight (core.count auto: second_core.py)


class ShardLabeller:
    """One actor of the pool: builds the backend once, labels batches, writes each as a shard."""

    def __init__(self, shipped: Shipped):
        from ..backends.loading import load_backend
        from ..algorithm.tasks import TaskShape
        from ..algorithm.transfer import Transfer

        self.shipped = shipped
        config = shipped.config
        if shipped.threads:
            import torch

            torch.set_num_threads(shipped.threads)
        self.backend = load_backend(config.backend)
        mine, theirs = self.backend.identity, shipped.identity
        if shipped.devices_differ:
            mine, theirs = same_weights(mine), same_weights(theirs)
        if mine != theirs:
            # Another dtype, device or model would give other labels than the driver's run.
            raise RuntimeError(f"this actor loaded {self.backend.identity}, the driver {shipped.identity}")
        self.shape = TaskShape(config.task)
        self.transfer = Transfer(self.shape, shipped.contexts, self.backend, config.task.label_prefix,
                                 config.task.separator, shipped.zero_shot)
        if shipped.prior is not None:
            from ..algorithm.class_prior import ClassPrior

            self.transfer.prior = ClassPrior(shipped.prior, 0)
        self.transfer.weights = shipped.weights
        self.out = Path(shipped.out_dir)

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        import numpy as np

        rows = self._rows(batch)
        id_field = self.shipped.config.task.id_field
        ids = [row_id(fields[id_field], "input", id_field) for fields in rows]
        hashes = np.array([hash64(i) for i in ids], dtype=np.int64)
        skip = self.shipped.skip
        keep = ~np.isin(hashes, skip) if len(skip) else np.ones(len(rows), dtype=bool)
        rows = [r for r, k in zip(rows, keep) if k]
        ids = [i for i, k in zip(ids, keep) if k]
        if not rows:
            return {"shard": [], "rows": []}
        out = self._label(rows, ids)
        name = "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] + ".jsonl"
        write_shard(self.out / name, out)
        # Only the count comes back: the summary recounts the labels from every shard, as a
        # resumed run must.
        return {"shard": [name], "rows": [len(out)]}

    def _rows(self, batch: Any) -> list[dict[str, Any]]:
        if self.shipped.input_kind == "jsonl":
            lines = batch["line"].to_pylist() if hasattr(batch["line"], "to_pylist") else list(batch["line"])
            return [parse_line("input", 0, bytes(line), 1) for line in lines]  # type: ignore[misc]
        return batch.to_pylist()

    def _label(self, rows: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
        from .row_emitter import HeldLabels, label_row, output_row
        from ..algorithm.transfer import ChunkRows

        shape, shipped = self.shape, self.shipped
        chunk = ChunkRows()
        core_labels: dict[int, Optional[int]] = {}
        core_scores: dict[int, tuple[float, ...]] = {}
        for r, (fields, name) in enumerate(zip(rows, ids)):
            chunk.rows.append((r, fields))
            fixed = shipped.fixed.get(name, {})
            for k, ex in enumerate(shape.examples(r, fields)):
                i = r * shape.per_row + k
                if k in fixed:
                    core_labels[i], core_scores[i] = fixed[k]
                    chunk.fixed.append((i, ex, fixed[k][0]))
                else:
                    chunk.targets.append((i, ex))
        done = self.transfer.label(chunk, shipped.centres)
        readings = done.readings or (None,) * len(done.examples)
        results = {i: (y, s, a, two) for i, y, s, a, two in
                   zip(done.examples, done.labels, done.scores, done.agreement, readings)}
        several = len(shipped.contexts) > 1
        out = []
        held = HeldLabels(core_labels, core_scores)
        for r, fields in chunk.rows:
            label = label_row(shape, r, fields, results, held, several)
            out.append(output_row(fields, label, shipped.label_field, shipped.confidence_field, several))
        return out


@dataclass
class RayTally:
    rows: int = 0
    seconds: float = 0.0


def run_transfer(ray: Any, data: str, shipped: Shipped, fields: tuple[str, ...],
                 on_batch: Any = lambda tally: None) -> RayTally:
    """The Ray Data pipeline: read, label in a pool of actors, write shards; the driver only
    counts what comes back."""
    rc = shipped.config.ray
    dataset = read_rows(ray, data, shipped.input_kind, fields)
    # A fixed pool whose actors restart twice, not for ever (Ray Data's default), so an actor that
    # keeps failing fails the run. Ray 2.60 names no parameter for restarts, only `ray_remote_args`,
    # which it warns is deprecated on every run: that one warning is silenced (Ray is pinned to 2.60;
    # a Ray without it fails this call loudly).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        labelled = dataset.map_batches(
            ShardLabeller, fn_constructor_kwargs={"shipped": shipped}, batch_size=rc.batch_size,
            compute=ray.data.ActorPoolStrategy(size=rc.actors), num_cpus=rc.cpus_per_actor,
            num_gpus=rc.gpus_per_actor or None, batch_format="pyarrow", max_restarts=2, max_task_retries=2,
        )
    tally = RayTally()
    start = time.monotonic()
    for batch in labelled.iter_batches(batch_size=None, batch_format="pyarrow"):
        tally.rows += sum(batch["rows"].to_pylist())
        tally.seconds = time.monotonic() - start
        on_batch(tally)
    return tally
