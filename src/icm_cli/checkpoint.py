"""The checkpoint beside OUT: a run's state as JSON, written atomically, checked before resuming.

The search state and the labelled cores are small and rewritten whole after every change
(OUT.checkpoint.json). Finished transfer chunks are appended, one JSON line each, to
OUT.checkpoint.chunks.jsonl, flushed to disk before the run goes on: rewriting a million rows'
labels after every chunk would cost more than transferring them. A line cut short by a kill
is ignored on resume (that chunk is redone).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from .config import Config
from .errors import InputError
from .output import atomic_write_text
from .core_labels import CoreOutcome
from .runner import RunState
from .search import SearchState
from .transfer import TransferChunk

# 2: the search state holds the labelling order (prompts follow it).
# 3: cores and transfer chunks instead of independent batches.
VERSION = 3


def checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".checkpoint.json")


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


class Checkpoint:
    """Saves RunState for one (config, data) pair; refuses to resume a different one."""

    def __init__(self, path: Path, config: Config, data_hash: str):
        self.path = path
        self.chunks_path = path.with_name(path.name.removesuffix(".json") + ".chunks.jsonl")
        self.config = json.loads(json.dumps(dataclasses.asdict(config), default=list))
        self.data_hash = data_hash

    def exists(self) -> bool:
        return self.path.exists() or self.chunks_path.exists()

    def save(self, state: RunState) -> None:
        doc = {
            "version": VERSION,
            "config": self.config,
            "data_hash": self.data_hash,
            "done": [dataclasses.asdict(d) for d in state.done],
            "search": _search_json(state.search),
            "centres": [list(c) for c in state.centres] if state.centres is not None else None,
            "calibrated": state.calibrated,
        }
        atomic_write_text(self.path, json.dumps(doc))
        if not state.calibrated:
            # A new or re-planned transfer: chunks logged before belong to another state.
            self.chunks_path.unlink(missing_ok=True)

    def save_chunk(self, index: int, chunk: TransferChunk) -> None:
        line = json.dumps({"index": index, **dataclasses.asdict(chunk)}) + "\n"
        with open(self.chunks_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> RunState:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{self.path}: no checkpoint to resume from; run without --resume")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{self.path}: checkpoint is unreadable ({e}); delete it to start again")
        if not isinstance(doc, dict):
            raise InputError(f"{self.path}: checkpoint is malformed (not a JSON object); delete it to start again")
        if doc.get("version") != VERSION:
            raise InputError(f"{self.path}: checkpoint is from another icm version; delete it to start again")
        if doc.get("data_hash") != self.data_hash:
            raise InputError(f"{self.path}: the input data changed since the checkpoint; refusing to resume")
        before, now = _flatten(doc.get("config", {})), _flatten(self.config)
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            k = changed[0]
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise InputError(
                f"{self.path}: the config changed since the checkpoint: {k} was {before.get(k)!r}, "
                f"now {now.get(k)!r}{more}; refusing to resume"
            )
        try:
            done = tuple(_outcome(d) for d in doc["done"])
            centres = doc["centres"]
            return RunState(
                done, _search_state(doc["search"]),
                tuple(tuple(float(v) for v in c) for c in centres) if centres is not None else None,
                bool(doc["calibrated"]), self._chunks() if doc["calibrated"] else (),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.path}: checkpoint is malformed ({e}); delete it to start again")

    def _chunks(self) -> tuple[TransferChunk, ...]:
        """The logged chunks 0, 1, 2, ... up to the first missing, torn or unreadable line."""
        try:
            lines = self.chunks_path.read_text(encoding="utf-8").split("\n")
        except FileNotFoundError:
            return ()
        out: list[TransferChunk] = []
        for line in lines:
            try:
                doc = json.loads(line)
                if doc["index"] != len(out):
                    break
                out.append(TransferChunk(
                    tuple(doc["examples"]), tuple(doc["labels"]), tuple(tuple(s) for s in doc["scores"]),
                    tuple(doc["agreement"]),
                ))
            except (ValueError, KeyError, TypeError):
                break
        if len(out) < sum(1 for line in lines if line):
            # Drop the torn tail, so that chunks appended from here on follow whole lines.
            atomic_write_text(self.chunks_path, "".join(lines[k] + "\n" for k in range(len(out))))
        return tuple(out)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.chunks_path.unlink(missing_ok=True)


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
