"""The checkpoint beside OUT: one directory, OUT.checkpoint/, that a run keeps while it works.

It holds the run's state (state.json: the labelled cores, the search in progress, the transfer
calibration, and what the run was made with: the label-affecting settings, the data's digest,
the digest of the labels a person fixed (--fixed), the model's identity, the icm version), rewritten atomically after every change, and the
finished transfer chunks (chunks.jsonl), appended one line each and synced before the run goes
on: rewriting a million rows' labels after every chunk would cost more than transferring them.
A resumed run reads the chunks lazily, in step with its own; a line cut short by a kill ends
the log there (that chunk is redone). The directory is created, continued and removed as one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..foundation.config import Config, resumable_key
from ..algorithm.core_labels import CoreOutcome
from ..foundation.errors import InputError, OutputError
from ..data.output import atomic_write_text
from .runner import RunState
from ..algorithm.search import SearchState
from ..algorithm.transfer import TransferChunk
from ..foundation.version import installed_version

# 2: the search state holds the labelling order (prompts follow it).
# 3: cores and transfer chunks instead of independent batches.
# 4: one directory; chunks by example id in the run; model identity and icm version recorded.
VERSION = 4
STATE, CHUNKS = "state.json", "chunks.jsonl"


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint")


def legacy_files(out: Path) -> list[Path]:
    """Checkpoint files an earlier icm kept beside OUT (two files, not one directory)."""
    return [p for p in (out.with_name(out.name + ".checkpoint.json"),
                        out.with_name(out.name + ".checkpoint.chunks.jsonl")) if p.exists()]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


def icm_version() -> str:
    return installed_version()


class Checkpoint:
    """Saves RunState for one (config, data, model); refuses to resume a different one."""

    def __init__(self, path: Path, config: Config, data_hash: str, warn: Callable[[str], None] = lambda _: None,
                 fixed: str = "", start_over: str = "run without --resume, with --force, to start over"):
        self.path = path
        self.start_over = start_over  # the way out of a refused resume, as the command that opened it spells it
        self.fixed = fixed  # the --fixed corrections' digest ("" for none): they change labels as settings do
        self.state_path = path / STATE
        self.chunks_path = path / CHUNKS
        self.config = json.loads(json.dumps(dataclasses.asdict(config), default=list))
        self.data_hash = data_hash
        self.model: Optional[str] = None  # the model's identity, once it is loaded
        self.warn = warn
        self._starts: list[int] = []  # byte offset of each chunk line read on resume
        self._truncate_at: Optional[int] = 0  # where the log is cut before the next append

    def exists(self) -> bool:
        return self.path.exists()

    def describe(self) -> str:
        return f"{self.path}{os.sep}"

    # ---- writing

    def save(self, state: RunState) -> None:
        try:
            self._save(state)
        except OSError as e:
            raise OutputError(f"{self.describe()}: cannot write the checkpoint ({e.strerror or e})") from None

    def save_chunk(self, index: int, chunk: TransferChunk) -> None:
        try:
            self._save_chunk(index, chunk)
        except OSError as e:
            raise OutputError(f"{self.describe()}: cannot write the checkpoint ({e.strerror or e})") from None

    def _save(self, state: RunState) -> None:
        doc = {
            "version": VERSION,
            "icm_version": icm_version(),
            "config": self.config,
            "data_hash": self.data_hash,
            "fixed": self.fixed,
            "model": self.model,
            "done": [dataclasses.asdict(d) for d in state.done],
            "search": _search_json(state.search),
            "centres": [list(c) for c in state.centres] if state.centres is not None else None,
            "calibrated": state.calibrated,
            "core_choice": state.core_choice,
            "core_kappa": state.core_kappa,
        }
        self.path.mkdir(exist_ok=True)
        atomic_write_text(self.state_path, json.dumps(doc))
        if not state.calibrated:
            # A new or re-planned transfer: chunks logged before belong to another state.
            self.chunks_path.unlink(missing_ok=True)
            self._truncate_at = 0

    def _save_chunk(self, index: int, chunk: TransferChunk) -> None:
        if self._truncate_at is not None:
            # The first chunk this run scores: whatever the log holds from here on (a torn
            # line, chunks of a plan that no longer matches) goes.
            cut = self._starts[index] if index < len(self._starts) else self._truncate_at
            if self.chunks_path.exists():
                os.truncate(self.chunks_path, cut)
            self._truncate_at = None
        line = json.dumps({"index": index, **dataclasses.asdict(chunk)}) + "\n"
        with open(self.chunks_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    # ---- reading

    def load(self) -> RunState:
        """The saved state, after checking it belongs to this config and data (the model is
        checked once it is loaded: `check_model`)."""
        if not self.path.is_dir():
            raise InputError(f"{self.describe()}: no checkpoint to resume from; run without --resume")
        try:
            doc = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.describe()}: the checkpoint holds no state (the run stopped before any "
                             f"work); {self.start_over}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{self.describe()}: checkpoint is unreadable ({e}); {self.start_over}")
        if not isinstance(doc, dict):
            raise InputError(f"{self.describe()}: checkpoint is malformed (not a JSON object); {self.start_over}")
        if doc.get("version") != VERSION:
            raise InputError(f"{self.describe()}: checkpoint is from another icm version; {self.start_over}")
        if doc.get("data_hash") != self.data_hash:
            raise InputError(f"{self.describe()}: the input data changed since the checkpoint; refusing to resume; "
                             f"{self.start_over}")
        self._check_config(doc.get("config", {}))
        self._check_fixed(doc.get("fixed", ""))
        if doc.get("icm_version") != icm_version():
            self.warn(f"the checkpoint was written by icm {doc.get('icm_version')}, this is icm {icm_version()}; "
                      f"resuming")
        self.model = doc.get("model")
        try:
            done = tuple(_outcome(d) for d in doc["done"])
            centres = doc["centres"]
            return RunState(
                done, _search_state(doc["search"]),
                tuple(tuple(float(v) for v in c) for c in centres) if centres is not None else None,
                bool(doc["calibrated"]), self._logged() if doc["calibrated"] else (),
                doc.get("core_choice"), doc.get("core_kappa"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.describe()}: checkpoint is malformed ({e}); {self.start_over}")

    def _check_config(self, saved: Any) -> None:
        before, now = _flatten(saved), _flatten(self.config)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k) and not resumable_key(k))
        if changed:
            k = changed[0]
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise InputError(
                f"{self.describe()}: the config changed since the checkpoint: {k} was {before.get(k)!r}, "
                f"now {now.get(k)!r}{more}; refusing to resume (these change labels; where and how "
                f"requests are sent may change); {self.start_over}"
            )

    def _check_fixed(self, saved: Any) -> None:
        if saved == self.fixed:
            return
        what = ("the run had no --fixed corrections, now it has" if not saved else
                "the run had --fixed corrections, now it has none" if not self.fixed else
                "the --fixed corrections changed (other rows or labels)")
        raise InputError(f"{self.describe()}: {what} since the checkpoint; refusing to resume (they change "
                         f"labels; resume with the same --fixed file, or {self.start_over})")

    def check_model(self, identity: str) -> None:
        """The loaded model must be the one the checkpoint's work was done with."""
        if self.model is not None and self.model != identity:
            raise InputError(f"{self.describe()}: the model changed since the checkpoint: it was {self.model}, "
                             f"now {identity}; refusing to resume; {self.start_over}")
        self.model = identity

    def _logged(self) -> Iterator[TransferChunk]:
        """The logged chunks 0, 1, 2, ... up to the first missing, torn or unreadable line."""
        try:
            f = open(self.chunks_path, "rb")
        except FileNotFoundError:
            return
        with f:
            offset = 0
            for raw in f:
                self._starts.append(offset)
                self._truncate_at = offset
                try:
                    doc = json.loads(raw)
                    if not raw.endswith(b"\n") or doc["index"] != len(self._starts) - 1:
                        return
                    chunk = TransferChunk(
                        tuple(doc["examples"]), tuple(doc["labels"]), tuple(tuple(s) for s in doc["scores"]),
                        tuple(doc["agreement"]), tuple(tuple(r) for r in doc.get("readings", ())),
                    )
                except (ValueError, KeyError, TypeError):
                    return
                offset += len(raw)
                self._truncate_at = offset
                yield chunk


def _search_json(state: Optional[SearchState]) -> Optional[dict]:
    if state is None:
        return None
    doc = dataclasses.asdict(state)
    version, internal, gauss = state.rng_state
    doc["rng_state"] = [version, list(internal), gauss]
    return doc


def _search_state(doc: Optional[dict]) -> Optional[SearchState]:
    if doc is None:
        return None
    version, internal, gauss = doc["rng_state"]
    return SearchState(
        tuple(doc["labels"]), (version, tuple(internal), gauss), doc["iteration"], doc["flips"],
        doc["proposals"], doc["accepted"], doc["evaluations"], tuple(doc["order"]),
    )


def _outcome(doc: dict) -> CoreOutcome:
    return CoreOutcome(
        tuple(doc["labels"]), tuple(doc["order"]), tuple(tuple(s) for s in doc["scores"]), doc["iterations"],
        doc["proposals"], doc["accepted"], doc["evaluations"], doc["utility"], doc["inconsistent"], doc["converged"],
        tuple(doc["predictions"]) if doc.get("predictions") is not None else None,
    )
