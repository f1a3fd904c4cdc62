"""`core.count: auto`: a second core only where the first one's reading departs from the model's.

One searched core sometimes drifts: the search finds labels the model finds self-consistent that
are not what it reads in the rows themselves, and many-shot prompting carries them to every row.
On held-out tweets one core in three did (README, "How a run is shaped"), and it is the unlucky
seed that falls below asking the model. Its many-shot reading then departs from the zero-shot one
on a sample (Cohen's kappa below DEPARTS), where the cores that did not drift agreed at 0.45-0.60.

So, after the first core is searched and calibrated, a seeded sample of the rows to transfer is
read both ways (the signal check's sample; the zero-shot reads are reused by the zero-shot rule):
- kappa at or above DEPARTS: the run is the one-core run, label for label, at the same cost;
- below: a second core, of half the demonstrations (core.second_tokens: a second opinion whose
  search costs a fraction of the first's), is searched on the next disjoint sample, the transfer is
  calibrated again with both, and every row's label combines the readings (each core's, and the
  zero-shot one where the zero-shot rule averages it in) weighted by each reading's mean
  agreement with the others on the sample (each kappa floored at 0). The first core's own rows
  keep its search's labels (with the zero-shot reading averaged in, as the zero-shot rule does
  for every core). Its cost is one more search and one more read of each row;
- then, with the zero-shot reading among the three, the departure is kept only where the two
  cores confirm it: they agree with each other more than either agrees with zero-shot, over the
  whole bootstrap interval of that margin. Otherwise every label, the cores' rows' too, is the
  zero-shot reading: three weak readings weighed by weak agreements landed anywhere from 3.5
  points above zero-shot to 3.2 below on held-out three-class tweets, and asking the model is the
  floor a run must not fall under (README, "One run is enough"). The rows not read yet are
  then read zero-shot only (Transfer.zero_shot_only): the cores' readings would weigh nothing,
  and after two cores' demonstrations a row costs several times its zero-shot read. Their
  icm_agreement and reading fields stay empty, and a review queue orders them by confidence.

The decision is kept in the checkpoint, so a resumed run makes the same one without reading the
sample again.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

from ..algorithm.scoring import centred_readings
from ..algorithm.search import argmax
from ..foundation.agreement import cohen_kappa
from .run_records import RunState

DEPARTS = 0.45
MIN_SAMPLE = 16  # fewer rows to compare on: no second core (a kappa over a handful says nothing)


def second_core(run: Any, transfer: Any, centres: Optional[list[list[float]]],
                resume: RunState) -> tuple[Any, Optional[list[list[float]]]]:
    """Decide, and where the first core departs, search and calibrate a second one. Returns the
    transfer and centres the run goes on with."""
    if run.config.core.count != "auto" or run.core_labeller is not None or not run.plan.cores:
        return transfer, centres
    s = run.summary
    if len(run.outcomes) > 1:  # resumed after the second core was searched and calibrated
        s.second_core, s.core_choice, s.core_kappa = True, resume.core_choice, resume.core_kappa
        return transfer, centres
    if resume.core_choice is not None:  # resumed after the decision: the same one, read again from nothing
        reason, kappa = resume.core_choice, resume.core_kappa
    else:
        kappa = _first_core_kappa(run, transfer, centres)
        if kappa is None:
            reason = f"fewer than {MIN_SAMPLE} rows to transfer: one core"
        elif kappa >= DEPARTS:
            reason = f"the core's reading agrees with zero-shot (kappa {kappa} >= {DEPARTS}): one core"
        else:
            reason = f"the core's reading departs from zero-shot (kappa {kappa} < {DEPARTS}): a second core"
        run.keep(dataclasses.replace(run.state, core_choice=reason, core_kappa=kappa))
    if kappa is None or kappa >= DEPARTS:
        s.second_core, s.core_choice, s.core_kappa = False, reason, kappa
        return transfer, centres
    run.replan(2)
    s.core_kappa = kappa
    if len(run.plan.cores) < 2:
        s.second_core, s.core_choice = False, reason.replace(": a second core", ": no rows left for a second core")
        return transfer, centres
    s.second_core, s.core_choice = True, reason
    run.search_more(resume)
    # Calibrated afresh, on a sample drawn outside both cores: exactly as a run resumed with both
    # cores searched calibrates. The first core's scores on the rows read so far (the first
    # calibration and the decision's sample) are taken, not read again: on a CPU a score depends
    # only on its prompt (backends/hf.py), so the numbers, and the labels, are the same.
    return run.calibrate(run.outcomes, RunState(), earlier=transfer)


def _first_core_kappa(run: Any, transfer: Any, centres: Optional[list[list[float]]]) -> Optional[float]:
    from .signal_readings import by_row, read_zero_shot, sample_ids

    ids = sample_ids(run, centres, run.config.search.seed)
    if len(ids) // run.shape.per_row < MIN_SAMPLE:
        return None
    transfer.keep = set(ids)
    examples = run.examples_of(ids)
    many = by_row(run, [transfer.readings(scores, centres, with_prior=False)[0][0] for scores in transfer.raw(examples)])
    read_zero_shot(run, transfer.continuations, examples)
    zero = by_row(run, centred_readings([run.zero_shot_raw[i] for i in ids], run.shape.calibrate))
    return round(cohen_kappa([argmax(r) for r in many], [argmax(r) for r in zero]), 3)


def weigh(run: Any, transfer: Any, centres: Optional[list[list[float]]]) -> Optional[list[list[float]]]:
    """Each reading's weight: its mean kappa with the other readings on the check sample; or,
    where the zero-shot reading is among them and the cores do not confirm their departure from
    it (signal_check.TwoCores.confirms), the zero-shot reading alone, for every row. Returns the
    centres the transfer goes on with."""
    from .signal_readings import by_row

    examples = run.examples_of(run.check_sample)
    per_context = [transfer.readings(scores, centres, with_prior=False)[0] for scores in transfer.raw(examples)]
    contexts = len(transfer.contexts)
    choices = [[argmax(s) for s in by_row(run, [row[c] for row in per_context])] for c in range(contexts)]
    weights = []
    for a in range(contexts):
        # Floored pair by pair: a reading that contradicts the others must not pull their weights down.
        kappas = [max(0.0, cohen_kappa(choices[a], choices[b])) for b in range(contexts) if b != a]
        weights.append(round(sum(kappas) / len(kappas), 4))
    if sum(weights) > 0:
        transfer.weights = weights
    if transfer.cores == 2 and contexts == 3 and not _confirmed(run, choices):
        centres = _zero_shot_alone(run, transfer, centres)
    run.summary.reading_weights = transfer.weights
    return centres


def _confirmed(run: Any, choices: list[list[int]]) -> bool:
    """Whether the cores' departure from zero-shot is read twice.

    A second core was searched because the first departed from zero-shot. If the two cores then
    agree with each other clearly more than either agrees with zero-shot, the departure is what
    both searches read in the rows; if not, one of three weak readings is as likely right as
    another, and averaging them lands anywhere between: on held-out three-class tweets that ran
    from 3.5 points above zero-shot to 3.2 below (README, "One run is enough"). Asking the model
    is then the floor the run keeps."""
    from .signal_check import two_cores

    cores = two_cores(choices[0], choices[1], choices[2], run.config.search.seed)
    lo, hi = cores.margin_interval
    figures = f"cores' kappa {cores.between:.2f}, margin {cores.margin:+.2f}, interval {lo:+.2f} to {hi:+.2f}"
    s = run.summary
    s.departure_confirmed = cores.confirms()
    if s.departure_confirmed:
        s.departure = (f"the two cores agree with each other more than with zero-shot ({figures}): "
                       f"labels from the readings weighed by agreement")
    else:
        s.departure = f"the two cores do not confirm their departure from zero-shot ({figures})"
    return s.departure_confirmed


def _zero_shot_alone(run: Any, transfer: Any, centres: Optional[list[list[float]]]) -> Optional[list[list[float]]]:
    """Every label, the cores' rows' too, the zero-shot reading, centred as asking the model
    (`search.method: zero_shot`) centres it: on the whole calibration sample (the zero-shot rule
    centred it on the check's smaller sample, enough to weigh it beside the cores)."""
    from .signal_readings import read_zero_shot
    from .zero_shot_rule import superseded, zero_shot_core_rows

    transfer.weights = [0.0, 0.0, 1.0]
    if centres is not None:
        known = run.zero_shot_raw
        unread = [i for i in run.calibration_sample if i not in known]  # only these are fetched from the file
        read_zero_shot(run, transfer.continuations, run.examples_of(unread))
        raw = [known[i] for i in run.calibration_sample]
        centres = centres[:-1] + [[sum(col) / len(col) for col in zip(*raw)]]
        transfer.known_zero_shot(dict(zip(run.calibration_sample, raw)))  # not read again in the transfer
    changed = zero_shot_core_rows(run, transfer, centres[-1] if centres is not None else None)
    run.summary.departure += f": every label is the zero-shot reading ({changed} of the cores' labels changed)"
    if run.summary.zero_shot_rule:
        run.summary.zero_shot_rule = superseded(run.summary.zero_shot_rule)
    return centres
