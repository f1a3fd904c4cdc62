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
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from .backends.models import same_weights
from .config import Config
from .errors import InputError
from .labels_io import row_id
from .row_index import hash64
from .sources import parse_line
from .tasks import AGREEMENT_FIELD, SOURCE_FIELD

SUMMARY = "icm-summary.json"
CHECKPOINT = "icm-checkpoint"
CORE_SHARD = "part-core.jsonl"


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


def is_remote(data: str) -> bool:
    """An object-store or other URL that Ray Data reads and icm's own reader does not."""
    return "://" in data and not data.startswith("hf://") and not data.startswith("file://")


def input_kind(data: str) -> str:
    """How Ray Data reads the input: lines of JSONL, or CSV/Parquet as Arrow."""
    path = data.rstrip("/")
    suffix = Path(path).suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    local = Path(path)
    if local.is_dir():
        kinds = {input_kind(str(p)) for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")}
        kinds.discard("unknown")
        if len(kinds) == 1:
            return kinds.pop()
        raise InputError(f"{data}: --engine ray reads a directory of .jsonl, .csv or .parquet shards of one kind "
                         f"(found {', '.join(sorted(kinds)) or 'none'})")
    return "unknown"


# ---- the driver -----------------------------------------------------------------------------


def check_out_dir(out: Path, force: bool) -> None:
    """OUT for the Ray engine is a directory of shards: absent, one of icm's to continue, or
    (with --force) a finished one of icm's to replace."""
    if out.suffix:
        raise InputError(f"{out}: --engine ray writes a directory of shards; name a directory (no extension)")
    if not out.exists():
        if not out.parent.exists():
            raise InputError(f"{out}: directory {out.parent} does not exist")
        return
    if not out.is_dir() or out.is_symlink():
        raise InputError(f"{out}: is not a directory; --engine ray writes a directory of shards")
    foreign = [p.name for p in out.iterdir() if not _ours(p.name)]
    if foreign:
        raise InputError(f"{out}: holds '{foreign[0]}', which icm did not write; choose another -o")
    if (out / SUMMARY).exists():
        if not force:
            raise InputError(f"{out}: holds a finished run; pass --force to replace it")
        for p in out.iterdir():
            _remove(p)


def _ours(name: str) -> bool:
    return (name.startswith("part-") and name.endswith(".jsonl")) or name in (SUMMARY, CHECKPOINT) or (
        name.startswith(".part-") and name.endswith(".tmp"))


def _remove(p: Path) -> None:
    if p.is_dir():
        import shutil

        shutil.rmtree(p)
    else:
        p.unlink()


def finished_ids(out: Path, id_field: str) -> Any:
    """Hashes of the ids in the shards a run already wrote (sorted), and clears half-written ones."""
    import numpy as np

    hashes: list[int] = []
    for tmp in out.glob(".part-*.tmp"):
        tmp.unlink()
    for shard in sorted(out.glob("part-*.jsonl")):
        with open(shard, "rb") as f:
            for line in f:
                if line.strip():
                    hashes.append(hash64(row_id(json.loads(line)[id_field], shard.name, id_field)))
    return np.sort(np.array(hashes, dtype=np.int64))


def start_ray(config: Config, quiet: bool) -> Any:
    """Join the cluster RAY_ADDRESS names, or start a local one sized by the config."""
    import logging

    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'icm-cli[ray]'")
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": not quiet, "include_dashboard": False,
                               "ignore_reinit_error": True}
    if not os.environ.get("RAY_ADDRESS"):
        options.update(num_cpus=config.ray.cpus or os.cpu_count(),
                       object_store_memory=config.ray.object_store_mib * 2**20)
    ray.init(**options)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.execution_options.preserve_order = False
    return ray


def read_rows(ray: Any, data: str, kind: str, fields: tuple[str, ...]) -> Any:
    """The input as a Ray dataset: JSONL as raw lines (parsed as icm parses them), CSV with
    every column as text (as icm reads CSV), Parquet as typed Arrow rows."""
    import pyarrow as pa

    path = data.removeprefix("file://")
    if kind == "jsonl":
        return ray.data.read_datasource(_lines_datasource()(path, file_extensions=None))
    if kind == "csv":
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in fields}, strings_can_be_null=False)
        return ray.data.read_csv(path, convert_options=convert)
    if kind == "parquet":
        return ray.data.read_parquet(path)
    raise InputError(f"{data}: --engine ray reads .jsonl, .csv or .parquet (a file, a directory of shards or a URL)")


def _lines_datasource() -> Any:
    """A Ray file datasource that streams a JSONL file's lines as bytes, split on newlines only
    (Ray's read_text splits on U+2028 too, which JSON strings may hold, and reads a file whole)."""
    from ray.data._internal.delegating_block_builder import DelegatingBlockBuilder
    from ray.data.datasource import FileBasedDatasource

    class JsonLines(FileBasedDatasource):
        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            rest = b""
            while True:
                block = f.read(8 << 20)
                if not block:
                    break
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                yield _lines_block(DelegatingBlockBuilder(), lines)
            if rest:
                yield _lines_block(DelegatingBlockBuilder(), [rest])

    return JsonLines


def _lines_block(builder: Any, lines: list[bytes]) -> Any:
    for line in lines:
        if line.strip():
            builder.add({"line": line})
    return builder.build()


# ---- the actors -----------------------------------------------------------------------------


class ShardLabeller:
    """One actor of the pool: builds the backend once, labels batches, writes each as a shard."""

    def __init__(self, shipped: Shipped):
        from .backends.loading import load_backend
        from .tasks import TaskShape
        from .transfer import Transfer

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
            return {"shard": [], "rows": [], "labels": []}
        out = self._label(rows, ids)
        name = "part-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16] + ".jsonl"
        write_shard(self.out / name, out)
        counts: dict[str, int] = {}
        for row in out:
            label = row[self.shipped.label_field]
            counts[label] = counts.get(label, 0) + 1
        return {"shard": [name], "rows": [len(out)], "labels": [json.dumps(counts)]}

    def _rows(self, batch: Any) -> list[dict[str, Any]]:
        if self.shipped.input_kind == "jsonl":
            lines = batch["line"].to_pylist() if hasattr(batch["line"], "to_pylist") else list(batch["line"])
            return [parse_line("input", 0, bytes(line), 1) for line in lines]  # type: ignore[misc]
        return batch.to_pylist()

    def _label(self, rows: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
        from .runner import label_row
        from .transfer import ChunkRows

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
        results = {i: (y, s, a) for i, y, s, a in zip(done.examples, done.labels, done.scores, done.agreement)}
        several = len(shipped.contexts) > 1
        out = []
        for r, fields in chunk.rows:
            label = label_row(shape, r, fields, results, core_labels, core_scores, several)
            out.append(output_row(fields, label, shipped.label_field, shipped.confidence_field, several))
        return out


def output_row(fields: dict[str, Any], label: Any, label_field: str, confidence_field: str,
               several: bool) -> dict[str, Any]:
    row = {**fields, label_field: label.label, confidence_field: label.confidence, SOURCE_FIELD: label.source}
    if several:
        row[AGREEMENT_FIELD] = label.agreement
    return row


def write_shard(path: Path, rows: list[dict[str, Any]]) -> None:
    """A shard whole or not at all: a temporary file renamed into place."""
    from .output import jsonl

    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(jsonl(rows))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass
class RayTally:
    shards: int = 0
    rows: int = 0
    labels: Optional[dict[str, int]] = None
    seconds: float = 0.0


def run_transfer(ray: Any, data: str, shipped: Shipped, fields: tuple[str, ...],
                 on_batch: Any = lambda tally: None) -> RayTally:
    """The Ray Data pipeline: read, label in a pool of actors, write shards; the driver only
    counts what comes back."""
    rc = shipped.config.ray
    dataset = read_rows(ray, data, shipped.input_kind, fields)
    labelled = dataset.map_batches(
        ShardLabeller, fn_constructor_kwargs={"shipped": shipped}, batch_size=rc.batch_size,
        concurrency=rc.actors, num_cpus=rc.cpus_per_actor, num_gpus=rc.gpus_per_actor or None,
        batch_format="pyarrow", max_restarts=2, max_task_retries=2,
    )
    tally = RayTally(labels={})
    start = time.monotonic()
    for batch in labelled.iter_batches(batch_size=None, batch_format="pyarrow"):
        for rows, labels in zip(batch["rows"].to_pylist(), batch["labels"].to_pylist()):
            tally.shards += 1
            tally.rows += rows
            for label, n in json.loads(labels).items():
                tally.labels[label] = tally.labels.get(label, 0) + n  # type: ignore[index]
        tally.seconds = time.monotonic() - start
        on_batch(tally)
    return tally


# ---- the whole run, on the driver -------------------------------------------------------------


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

    def __init__(self, run_input: Any, config: Config, out: Path, data: str, label_field: str,
                 confidence_field: str, log: Any, quiet: bool):
        self.run_input, self.config, self.out, self.data = run_input, config, out, data
        self.label_field, self.confidence_field = label_field, confidence_field
        self.log, self.quiet = log, quiet
        self.kind = input_kind(data)

    def check(self) -> None:
        """What the Ray engine cannot do, said before any model loads."""
        task = self.config.task
        if task.id_field is None:
            raise InputError("--engine ray matches rows across re-runs by their id: set task.id_field")
        if task.type == "claims" and task.group_field and task.key_field:
            raise InputError("--engine ray labels rows independently; claims with consistency groups "
                             "(task.group_field + task.key_field) run locally (drop --engine ray)")
        if self.kind == "unknown":
            raise InputError(f"{self.data}: --engine ray reads .jsonl, .csv or .parquet files, a directory of "
                             f"them, or such a URL")

    def run(self, backend: Any, checkpoint: Any, state: Any, view: Any) -> Any:
        from .runner import Run, RunState

        run = Run(self.run_input, self.config, backend, view, None, checkpoint, None)
        resume = state or RunState()
        outcomes = run.search(resume)
        transfer, centres = run.calibrate(outcomes, resume)
        centres = run.choose_reading(transfer, centres)
        run.check(transfer, centres)  # the signal check reads its sample here, on the driver
        several = len(outcomes) > 1
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
                          self.confidence_field, str(self.out.resolve()), self.kind, identity, threads, differ)
        ray = start_ray(self.config, self.quiet)
        self.log(f"ray: labelling the rows outside the core on {self.config.ray.actors} actor(s) "
                 f"({len(skip):,} rows already labelled)")
        last = [time.monotonic()]

        def progress(tally: RayTally) -> None:
            if time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                self.log(f"ray: {tally.rows:,} rows in {tally.shards:,} shards, "
                         f"{tally.rows / max(tally.seconds, 1e-9):,.1f} rows/s")

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
        from .runner import label_row

        shape, id_field = self.run_input.shape, self.config.task.id_field
        fixed: dict[str, dict[int, tuple[int, tuple[float, ...]]]] = {}
        rows, hashes = [], []
        for r, fields in _held_rows(run):
            ids = range(r * shape.per_row, (r + 1) * shape.per_row)
            name = row_id(fields[id_field], "core", id_field)
            if all(run.core_labels.get(i) is not None for i in ids):
                label = label_row(shape, r, fields, {}, run.core_labels, run.core_scores, several, run.plan.fixed)
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
        from .output import atomic_write_text, summary_text

        doc = {**summary.to_json(), "engine": "ray", "shards": len(list(self.out.glob("part-*.jsonl"))),
               "actors": self.config.ray.actors, "rows_this_run": tally.rows}
        atomic_write_text(self.out / SUMMARY, summary_text(doc))
        return summary
