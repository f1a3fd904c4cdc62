"""The default never does worse than asking the model: when to average in the zero-shot reading.

A small model's many-shot reading (each row after the core's demonstrations) can drift from what
it reads in the row itself: the search found labels the model finds self-consistent, and many-shot
prompting carried them to every row. Before the transfer, a seeded sample of the rows to transfer
is read both ways (the many-shot reading comes from the calibration, the zero-shot one costs one
short read a row) and compared as Cohen's kappa:

- agreement at or above AGREES: the two readings already agree closely, averaging would change
  few labels, and the labels are the many-shot reading alone (the paper's);
- below: every row's label averages the two calibrated readings (for the core's rows, the
  search's leave-one-out reading with the zero-shot one);
- with rows a person labelled among the demonstrations (`label --fixed`): always averaged. Those
  rows are the ones a reviewer found hardest; on 600 held-out tweets with the 64 least confident
  corrected, the many-shot reading after them agreed with zero-shot at kappa 0.81 (so alone by
  the rule above) and scored 0.769 on the other rows, the average 0.851 (none corrected: 0.825).

Measured on two held-out tweet samples and a dozen runs (README): the average was at or above
zero-shot in every run, and the many-shot reading alone fell below zero-shot by up to 5 points,
in runs whose agreement on the sample was as high as 0.73; the two runs at 0.81 or more had the
many-shot reading alone at or above the average. `transfer.zero_shot: on` always averages, `off`
never does. The sample is the signal check's, which reuses its zero-shot reading. A comparison's
kappa is over its rows, both orders read together (signal_readings.by_row): each order alone reads
mostly the query and a bias to one answer, and an uncalibrated core that said True to every order
agreed with zero-shot at exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..foundation.agreement import cohen_kappa
from ..algorithm.core_labels import with_zero_shot, zero_shot_alone
from ..algorithm.scoring import centred_readings, log_softmax
from ..algorithm.transfer import combine
from ..algorithm.search import Labels, argmax
from ..algorithm.tasks import Example
from .signal_readings import by_row, core_zero_shot, read_zero_shot

AGREES = 0.8


@dataclass(frozen=True)
class ZeroShotChoice:
    averaged: bool
    kappa: Optional[float]  # the sample's agreement, where it was measured (auto)
    reason: str  # one line, for the summary


def choose(run: Any, transfer: Any, centres: Optional[list[list[float]]], ids: Sequence[int],
           mode: str) -> tuple[ZeroShotChoice, Optional[list[list[float]]]]:
    """Decide, and when the zero-shot reading is averaged in, add it to the transfer (its centre
    from the sample, as the calibration centres the cores' readings) and to the core's rows.
    Returns the choice and the centres the transfer then uses."""
    examples = run.examples_of(list(ids))
    read_zero_shot(run, transfer.continuations, examples)
    raw = [run.zero_shot_raw[i] for i in ids]
    readings = centred_readings(raw, run.shape.calibrate)
    run.zero_shot_readings = dict(zip(ids, readings))
    kappa = None
    why = "transfer.zero_shot: on"
    if mode == "auto" and run.plan.fixed_demos:
        # The kappa rule was measured on searched cores alone; corrections are the rows a reviewer
        # found hardest, and as demonstrations they pull the many-shot reading off while the two
        # readings still agree on most rows (see the module's docstring).
        why = f"{run.plan.fixed_demos} rows a person labelled are demonstrations (--fixed)"
    elif mode == "auto":
        many = by_row(run, many_shot(transfer, centres, examples))
        kappa = round(cohen_kappa([argmax(s) for s in many], [argmax(s) for s in by_row(run, readings)]), 3)
        # "on N rows" read as N rows that differ; it is the sample the kappa is measured on.
        sample = f"a sample of {len(many)} rows" + (" (both orders of each)" if run.shape.per_row == 2 else "")
        if kappa >= AGREES:
            return ZeroShotChoice(False, kappa, f"the many-shot reading agrees with zero-shot on {sample} "
                                                f"(kappa {kappa} >= {AGREES}): labels from it alone"), centres
        why = f"the many-shot reading departs from zero-shot on {sample} (kappa {kappa} < {AGREES})"
    transfer.add_zero_shot(dict(zip(ids, raw)))
    if centres is not None:
        centres = centres + [[sum(col) / len(col) for col in zip(*raw)]]
    changed = _average_core_rows(run, transfer)
    readings = "the two readings" if transfer.cores == 1 else f"the {transfer.cores} cores' readings and zero-shot's"
    return ZeroShotChoice(True, kappa, f"{why}{AVERAGES}{readings}; "
                                       f"{changed} of the search's core labels changed"), centres


AVERAGES = ": every label averages "


def superseded(reason: str) -> str:
    """The summary's line once the cores' departure goes unconfirmed (second_core.py): the
    averaging it first decided is replaced, and the summary must not say both."""
    why = reason.split(AVERAGES)[0]
    return f"{why}: every label is the zero-shot reading, as the two cores do not confirm their departure (below)"


def many_shot(transfer: Any, centres: Optional[list[list[float]]],
              examples: Sequence[tuple[int, Example]]) -> list[list[float]]:
    """Each example's reading after the cores' demonstrations, centred as the transfer centres it."""
    cores = max(1, transfer.cores)
    return [combine(transfer.readings(scores[:cores], centres, with_prior=False)[0])
            for scores in transfer.raw(list(examples))]


def _average_core_rows(run: Any, transfer: Any) -> int:
    """The core's rows: the search's leave-one-out reading averaged with the zero-shot one."""
    changed = 0
    for core, outcome in zip(run.plan.cores, run.outcomes):
        raw = _core_zero_shot(run, transfer, core, outcome)
        zero_shot = centred_readings(raw, run.shape.calibrate)  # centred on the core, as its search reads
        changed += _relabel(run, core, with_zero_shot(outcome, zero_shot, core.problem))
    return changed


def zero_shot_core_rows(run: Any, transfer: Any, centre: Optional[Sequence[float]]) -> int:
    """The cores' rows: the zero-shot reading alone, centred on `centre` as the transfer centres
    it (second_core.weigh, where the cores' departure is not confirmed). Returns how many labels
    changed."""
    changed = 0
    for core, outcome in zip(run.plan.cores, run.outcomes):
        raw = _core_zero_shot(run, transfer, core, outcome)
        readings = [log_softmax([v - m for v, m in zip(r, centre)] if centre is not None else list(r)) for r in raw]
        changed += _relabel(run, core, zero_shot_alone(outcome, readings, core.problem))
    return changed


def _core_zero_shot(run: Any, transfer: Any, core: Any, outcome: Any) -> list[list[float]]:
    """A core's raw zero-shot scores, each example read once in the run (run.zero_shot_raw): the
    sample, the other rule and the transfer ask for the same prompts. The rows the search left
    unlabelled are transferred, and take their zero-shot score from here."""
    raw = core_zero_shot(run, core, transfer.continuations)
    transfer.known_zero_shot({i: r for i, r, y in zip(core.ids, raw, outcome.labels) if y is None})
    return raw


def _relabel(run: Any, core: Any, relabelled: tuple[Labels, tuple[tuple[float, ...], ...]]) -> int:
    changed = 0
    labels, scores = relabelled
    for local, (i, y) in enumerate(zip(core.ids, labels)):
        if y is None:
            continue
        changed += y != run.core_labels.get(i)
        run.core_labels[i], run.core_scores[i] = y, scores[local]
    return changed
