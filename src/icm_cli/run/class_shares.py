"""Labels that follow the data's class shares: estimate them without gold, apply them, say so.

Before the transfer, the class shares are estimated on the signal check's sample (class_prior.py:
EM over the sample's combined readings, which the run has read already) and, where
`transfer.class_prior: on` says so, added to every label's reading: the core's rows and every row
the transfer reads. `auto` (the default) reports the estimate and applies nothing: on 565 held-out
three-class tweets (README) the 270M model's calibrated readings are no likelihoods EM can trust,
and the prior cut the negative class (40% of the rows) to 1-13% of the labels and accuracy from
0.41-0.46 to 0.31-0.41, while the rare class stayed over-predicted.

Where the user states the data's shares (`task.class_shares`: a base rate they know, not labels),
the labels are matched to them instead: per-label offsets found on the same sample's combined
readings (class_prior.matching) are added to every reading the same way.

The summary states the labels' shares beside two gold-free references, and warns where a class's
share of the labels is far from the model's own zero-shot reading of the sample (collapsed: under
half of it; inflated: over 1.5 times), the way a search that drifted to one class shows; where no
zero-shot reading was taken, the EM estimate is the reference; where shares were stated, they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from ..algorithm.class_prior import ClassPrior
from ..algorithm.search import argmax

COLLAPSED = 0.5
INFLATED = 1.5


@dataclass
class SharesReport:
    applied: bool
    reason: str
    estimated: dict[str, float]  # label word -> estimated share of the data (EM)
    sample_rows: int
    zero_shot: dict[str, float] = field(default_factory=dict)  # label word -> share of the sample's zero-shot labels
    labels: dict[str, float] = field(default_factory=dict)  # label word -> share of the run's labels
    warnings: list[str] = field(default_factory=list)
    stated: dict[str, float] = field(default_factory=dict)  # task.class_shares, where given

    def to_json(self) -> dict:
        return asdict(self)


def decide(mode: str, labels: int, stated: Optional[dict[str, float]] = None) -> tuple[bool, str]:
    """Whether shares are applied to the labels: stated ones always, the estimate where asked."""
    if stated:
        return True, "task.class_shares: the labels are matched to the stated shares"
    if mode == "off":
        return False, "transfer.class_prior: off"
    if mode == "on":
        return True, "transfer.class_prior: on"
    return False, ("the estimated shares are reported, not applied (transfer.class_prior: on applies them); batch "
                   "calibration leans the labels to equal shares, so state known base rates in task.class_shares")


def estimate_and_apply(run: Any, transfer: Any, centres: Optional[list[list[float]]], ids: Sequence[int],
                       mode: str) -> SharesReport:
    """Estimate on the sample `ids`; where applied, the transfer adds the shares to every reading
    from here on and the core's rows are relabelled with them."""
    words = run.shape.label_words
    sample = run.examples_of(list(ids))
    prior = transfer.estimate_prior(sample, centres)
    stated = run.config.task.class_shares
    applied, reason = decide(mode, len(words), stated)
    report = SharesReport(applied, reason, dict(zip(words, prior.shares)), len(ids))
    if stated:
        wanted = [stated[w] / sum(stated.values()) for w in words]
        report.stated = _rounded(stated, words)
        # Matched on the whole calibration sample (up to transfer.calibration_size rows), not the
        # check's: on 140 rows a 15% class came out at 11% over all 600 (held-out, README).
        matched = list(run.calibration_sample) or list(ids)
        prior = transfer.match_prior(run.examples_of(matched), centres, wanted)
        report.sample_rows = len(matched)
    zero = [run.zero_shot_readings[i] for i in ids if i in run.zero_shot_readings]
    if zero:
        report.zero_shot = {w: round(sum(argmax(r) == y for r in zero) / len(zero), 4) for y, w in enumerate(words)}
    if applied:
        transfer.prior = prior
        changed = _apply_to_core_rows(run, prior)
        report.reason += f"; {changed} of the core's labels changed"
    return report


def not_applied(run: Any, uncalibrated: bool) -> SharesReport:
    """Shares asked for that had nothing to act on, said so rather than silently dropped."""
    why = ("the readings are not calibrated (task.calibrate), so there is no sample to match on" if uncalibrated
           else "every row was labelled by the search itself; the shares act on the rows a transfer labels")
    stated = run.config.task.class_shares
    what = "task.class_shares" if stated else "transfer.class_prior: on"
    return SharesReport(False, f"{what} not applied: {why}", {}, 0,
                        stated=_rounded(stated, run.shape.label_words) if stated else {})


def _rounded(stated: dict[str, float], words: Sequence[str]) -> dict[str, float]:
    """The stated shares in label order, summing to 1 (the config allows a sum within 0.02 of it)."""
    total = sum(stated.values())
    return {w: round(stated[w] / total, 4) for w in words}


def _apply_to_core_rows(run: Any, prior: ClassPrior) -> int:
    changed = 0
    for i, scores in list(run.core_scores.items()):
        adjusted = prior.apply(scores)
        y = argmax(adjusted)
        changed += y != run.core_labels.get(i)
        run.core_labels[i], run.core_scores[i] = y, tuple(adjusted)
    return changed


def finish(report: SharesReport, label_counts: dict[str, int], words: Sequence[str]) -> SharesReport:
    """The labels' own shares beside the estimate, and a warning for each class far from it."""
    total = sum(label_counts.values())
    if not total:
        return report
    report.labels = {w: round(label_counts.get(w, 0) / total, 4) for w in words}
    if report.stated:
        reference, what = report.stated, "its stated share"
    elif report.zero_shot:
        reference, what = report.zero_shot, "its share of the zero-shot labels"
    else:
        reference, what = report.estimated, "its estimated share"
    for w in words:
        est, got = reference.get(w, 0.0), report.labels[w]
        if est <= 0:
            continue
        if got < COLLAPSED * est:
            report.warnings.append(f"'{w}' takes {got:.1%} of the labels, under half {what} ({est:.1%}): collapsed")
        elif got > INFLATED * est:
            report.warnings.append(f"'{w}' takes {got:.1%} of the labels, over 1.5 times {what} ({est:.1%}): inflated")
    return report
