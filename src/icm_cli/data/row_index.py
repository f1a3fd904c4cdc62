"""One pass over the input before any model loads: every row checked, a small record kept per row.

The pass reads the selected rows (all of them, the first `--limit N`, or a seeded `--sample N`
drawn in the same pass), checks each the way the task will read it, and keeps for each row only
where to read it again (8 bytes) and, when rows are grouped, its group (8 bytes): memory grows
with the number of rows, never with their text. Ids are checked for duplicates by a 64-bit hash
each, sorted at the end; a hash shared by two rows is then confirmed on the text itself.

The digest that checkpoints compare is computed in the same pass: a JSONL file's bytes (up to
the last row read, for --limit), a dataset's row contents, and the selection.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..foundation.errors import InputError
from .labels_io import row_id
from .sources import Row, Source, new_digest


@dataclass(frozen=True)
class Selection:
    """Which rows of the input a run labels: all, the first `limit`, or a seeded uniform `sample`."""

    limit: Optional[int] = None
    sample: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and self.sample is not None:
            raise InputError("--limit and --sample: pass one of them")

    def describe(self) -> str:
        if self.limit is not None:
            return f"limit={self.limit}"
        if self.sample is not None:
            return f"sample={self.sample},seed={self.seed}"
        return ""


# Value kinds seen per field, as bits: CSV and Parquet writers type their columns from them
# before the first row is written.
KIND_STR, KIND_INT, KIND_FLOAT, KIND_BOOL, KIND_NULL, KIND_OTHER = 1, 2, 4, 8, 16, 32
_KINDS = {str: KIND_STR, int: KIND_INT, float: KIND_FLOAT, bool: KIND_BOOL, type(None): KIND_NULL}


def value_kind(value: Any) -> int:
    kind = _KINDS.get(type(value), KIND_OTHER)
    if kind == KIND_INT and not -(2**63) <= value < 2**63:
        return KIND_OTHER  # past int64: Arrow cannot type it
    return kind


class RowCheck:
    """What the task needs of one row; raises InputError naming the row. Returns the row's
    consistency group (or None). The task module provides it; the index only calls it."""

    fields: tuple[str, ...] = ()  # fields every row must have (a missing one is judged at the end)

    def __call__(self, source: Source, row: Row) -> Optional[str]:
        raise NotImplementedError


@dataclass
class RowIndex:
    """The selected rows, as a run reads them: how many, where each is, and its group."""

    source: Source
    count: int
    positions: np.ndarray  # int64: Source.read position of each row
    groups: Optional[np.ndarray]  # int64 per row: dense group number in order of first appearance
    digest: str
    fields: tuple[str, ...]  # every input field, in order of first appearance
    kinds: dict[str, int]  # per field, the KIND_* bits of its values
    selection: Selection = field(default_factory=Selection)
    _members: Optional[tuple[np.ndarray, np.ndarray]] = None

    # ---- reading rows again

    def stream(self) -> Iterator[tuple[int, Row]]:
        """Every selected row in input order, with its row number in the run."""
        if self.selection.sample is not None:
            for start in range(0, self.count, 4096):
                block = self.positions[start:start + 4096].tolist()
                yield from zip(itertools.count(start), self.source.read(block))
            return
        rows = self.source.rows()
        yield from zip(range(self.count), itertools.islice(rows, self.count))

    def read(self, rows: Sequence[int]) -> list[Row]:
        return self.source.read([int(self.positions[r]) for r in rows])

    # ---- units: what must be labelled together (a consistency group, else one row)

    def units(self) -> int:
        if self.groups is None:
            return self.count
        return int(self.groups.max()) + 1 if self.count else 0

    def unit_rows(self, unit: int) -> list[int]:
        """The rows of a unit, ascending."""
        if self.groups is None:
            return [unit]
        order, starts = self._membership()
        return order[starts[unit]:starts[unit + 1]].tolist()

    def unit_of(self, row: int) -> int:
        return row if self.groups is None else int(self.groups[row])

    def _membership(self) -> tuple[np.ndarray, np.ndarray]:
        if self._members is None:
            assert self.groups is not None
            order = np.argsort(self.groups, kind="stable")
            counts = np.bincount(self.groups, minlength=self.units())
            starts = np.concatenate(([0], np.cumsum(counts)))
            self._members = (order, starts)
        return self._members


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


def build_index(source: Source, selection: Selection, check: RowCheck, id_field: Optional[str],
                protected: Sequence[tuple[str, str]] = (), kinds: bool = False) -> RowIndex:
    """Check every selected row and index it. `protected`: (field, hint) pairs an input row may
    not hold (the output fields the run adds). `kinds`: record value kinds per field."""
    digest = new_digest()
    rows, base = _selected(source, selection, digest)
    positions, ids, groups = array("q"), array("q"), array("q")
    seen_fields: dict[str, None] = {}
    seen_kinds: dict[str, int] = {}
    missing: dict[str, str] = {}  # a needed field -> the first row's message that lacked it
    grouped: Optional[bool] = None
    count = 0
    for row in rows:
        fields = row.fields
        for name in fields:
            if name not in seen_fields:
                seen_fields[name] = None
        if kinds:
            for name, value in fields.items():
                seen_kinds[name] = seen_kinds.get(name, 0) | value_kind(value)
        for name, hint in protected:
            if name in fields:
                raise InputError(f"{source.at(row)}: field '{name}' already exists in the input; {hint}")
        if id_field is not None:
            value = fields.get(id_field)
            if value is None:
                raise InputError(f"{source.at(row)}: field '{id_field}' (the id field) is missing")
            ids.append(hash64(row_id(value, source.at(row), id_field)))
        absent = [n for n in check.fields if n not in fields]
        if absent:
            for name in absent:
                missing.setdefault(name, _missing_message(source, row, name))
            group = None
        else:
            group = check(source, row)
        if grouped is None:
            grouped = group is not None
        groups.append(hash64(group) if group is not None else 0)
        positions.append(row.position)
        count += 1
    if count == 0:
        raise InputError(f"{source.name}: has no rows")
    for name in check.fields:
        if name in missing and name not in seen_fields:
            from .tables import field_list

            raise InputError(f"{source.name}: the template names field '{name}', which no row has; "
                             f"the rows have {field_list(seen_fields)}")
    if missing:
        raise InputError(next(iter(missing.values())))
    if id_field is not None:
        _check_unique_ids(source, selection, np.frombuffer(ids, dtype=np.int64), id_field)
    whole = base if base is not None else digest.hexdigest()[:16]
    if selection.describe():
        whole = hashlib.sha256(f"{whole}|{selection.describe()}|".encode()).hexdigest()[:16]
    return RowIndex(source, count, np.frombuffer(positions, dtype=np.int64).copy(),
                    _dense(np.frombuffer(groups, dtype=np.int64)) if grouped else None,
                    whole, tuple(seen_fields), seen_kinds, selection)


def _missing_message(source: Source, row: Row, name: str) -> str:
    from .tables import field_list

    return (f"{source.at(row)}: field '{name}' (used by the template) is missing; "
            f"this row has {field_list(row.fields)}")


def _selected(source: Source, selection: Selection, digest: Any) -> tuple[Iterator[Row], Optional[str]]:
    """The selected rows in input order, and (for a sample) the digest of the whole input,
    which the sampling pass has already read."""
    if selection.limit is not None:
        return itertools.islice(source.rows(digest), selection.limit), None
    if selection.sample is None:
        return source.rows(digest), None
    kept = reservoir(source.rows(digest), selection.sample, selection.seed)
    base = digest.hexdigest()[:16]
    kept.sort(key=lambda pair: pair[0])

    def rows() -> Iterator[Row]:
        for start in range(0, len(kept), 4096):
            block = kept[start:start + 4096]
            for (_, line), row in zip(block, source.read([p for p, _ in block])):
                yield Row(line, row.fields, row.position)

    return rows(), base


def reservoir(rows: Iterator[Row], k: int, seed: int) -> list[tuple[int, int]]:
    """A uniform sample of k rows in one pass (Algorithm R), as (position, line) pairs."""
    rng = random.Random(seed)
    kept: list[tuple[int, int]] = []
    for n, row in enumerate(rows):
        if n < k:
            kept.append((row.position, row.line))
        else:
            j = rng.randrange(n + 1)
            if j < k:
                kept[j] = (row.position, row.line)
    return kept


def _dense(hashes: np.ndarray) -> np.ndarray:
    """Group hashes as group numbers 0, 1, 2, ... in order of first appearance."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def _check_unique_ids(source: Source, selection: Selection, hashes: np.ndarray, id_field: str) -> None:
    ordered = np.sort(hashes)
    shared = ordered[1:][ordered[1:] == ordered[:-1]]
    if not len(shared):
        return
    # A hash shared by two rows: find the rows, and tell a real duplicate from a collision.
    suspects = set(shared.tolist())
    first: dict[str, int] = {}
    rows, _ = _selected(source, selection, new_digest())
    for row in rows:
        value = row_id(row.fields[id_field], source.at(row), id_field)
        if hash64(value) not in suspects:
            continue
        if value in first:
            raise InputError(f"{source.at(row)}: duplicate id '{value}' (first on {source.numbering} {first[value]})")
        first[value] = row.line


def seeded_order(n: int, seed: int, skip: Callable[[int], bool] = lambda _: False) -> Iterator[int]:
    """0..n-1 in a seeded random order, drawn lazily (a run needs the first few dozen of ten
    million), leaving out those `skip` names. The same seed gives the same order."""
    rng = random.Random(seed)
    drawn: set[int] = set()
    while len(drawn) < n // 2:
        i = rng.randrange(n)
        if i in drawn:
            continue
        drawn.add(i)
        if not skip(i):
            yield i
    # Past half, rejection slows down: shuffle what is left instead.
    rest = [i for i in range(n) if i not in drawn]
    rng.shuffle(rest)
    yield from (i for i in rest if not skip(i))


def seeded_sample(n: int, k: int, seed: int, skip: Callable[[int], bool] = lambda _: False) -> list[int]:
    """k of 0..n-1 (all that are left if fewer), ascending, drawn with `seed`, none that `skip` names."""
    return sorted(itertools.islice(seeded_order(n, seed, skip), k))
