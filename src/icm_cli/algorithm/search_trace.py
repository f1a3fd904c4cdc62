"""The search's course, kept for people: U, inconsistencies and proposals over the iterations of
one core, as `run_search` reports them step by step.

Kept whole while the search runs (a few numbers a step) and thinned to at most MAX_POINTS evenly
spaced steps, the first and the last always among them, when it goes into the summary: a plot
needs no more, and a summary of a 3,000-iteration search on eight cores stays small. Proposals
and acceptances are running totals, so the share accepted between any two kept points is exact
even after thinning; a U spike between two kept points can be lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .search import Step

MAX_POINTS = 200


@dataclass
class CoreTrace:
    """One core's search, one entry per kept step (parallel lists: compact in JSON)."""

    core: int
    iteration: list[int] = field(default_factory=list)
    utility: list[float] = field(default_factory=list)
    inconsistent: list[int] = field(default_factory=list)
    proposals: list[int] = field(default_factory=list)  # running total
    accepted: list[int] = field(default_factory=list)  # running total
    temperature: list[float] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.iteration.append(step.iteration)
        self.utility.append(round(step.utility, 4))
        self.inconsistent.append(step.inconsistent)
        self.proposals.append(step.proposals)
        self.accepted.append(step.accepted)
        self.temperature.append(round(step.temperature, 4))

    def thinned(self, most: int = MAX_POINTS) -> "CoreTrace":
        """At most `most` steps, evenly spaced, the first and the last kept."""
        n = len(self.iteration)
        if n <= most:
            keep = list(range(n))
        else:
            keep = sorted({round(k * (n - 1) / (most - 1)) for k in range(most)})

        def pick(values: list) -> list:
            return [values[k] for k in keep]

        return CoreTrace(self.core, pick(self.iteration), pick(self.utility), pick(self.inconsistent),
                         pick(self.proposals), pick(self.accepted), pick(self.temperature))
