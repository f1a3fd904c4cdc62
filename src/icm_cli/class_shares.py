"""Labels that follow the data's class shares: estimate them without gold, apply them, say so.

Before the transfer, the class shares are estimated on the signal check's sample (class_prior.py:
EM over the sample's combined readings, which the run has read already) and, where
`transfer.class_prior` says so, added to every label's reading: the core's rows and every row
the transfer reads. Whether applied or not, the summary states the estimated shares beside the
labels' own, and warns where a class's share of the labels is far from its estimate (collapsed:
under half of it; inflated: over 1.5 times), which is how a forced balance shows without gold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from .class_prior import ClassPrior
from .search import argmax

COLLAPSED = 0.5
INFLATED = 1.5


@dataclass
class SharesReport:
    applied: bool
    reason: str
    estimated: dict[str, float]  # label word -> estimated share of the data
    sample_rows: int
    labels: dict[str, float] = field(default_factory=dict)  # label word -> share of the run's labels
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def decide(mode: str, labels: int) -> tuple[bool, str]:
    """Whether the estimated shares are applied to the labels."""
    if mode == "off":
        return False, "transfer.class_prior: off"
    if mode == "on":
        return True, "transfer.class_prior: on"
    if labels > 2:
        return True, f"{labels} labels: the estimated shares are applied"
    return False, "two labels: the estimated shares are reported, not applied"


def estimate_and_apply(run: Any, transfer: Any, centres: Optional[list[list[float]]], ids: Sequence[int],
                       mode: str) -> SharesReport:
    """Estimate on the sample `ids`; where applied, the transfer adds the shares to every reading
    from here on and the core's rows are relabelled with them."""
    words = run.shape.label_words
    prior = transfer.estimate_prior(run.examples_of(list(ids)), centres)
    applied, reason = decide(mode, len(words))
    report = SharesReport(applied, reason, dict(zip(words, prior.shares)), len(ids))
    if applied:
        transfer.prior = prior
        changed = _apply_to_core_rows(run, prior)
        report.reason += f"; {changed} of the core's labels changed"
    return report


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
    for w in words:
        est, got = report.estimated.get(w, 0.0), report.labels[w]
        if est <= 0:
            continue
        if got < COLLAPSED * est:
            report.warnings.append(f"'{w}' takes {got:.1%} of the labels, under half its estimated share "
                                   f"({est:.1%}): collapsed")
        elif got > INFLATED * est:
            report.warnings.append(f"'{w}' takes {got:.1%} of the labels, over 1.5 times its estimated share "
                                   f"({est:.1%}): inflated")
    return report
