"""What a labelling run takes in, reports as it goes, keeps for a resume and sums up at the end:
the records runner.py, the checkpoint, the dry run and the report share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Protocol

from ..algorithm.core_labels import CoreOutcome
from ..data.human_labels import HumanLabels
from ..data.row_index import RowIndex
from ..algorithm.search import Step
from ..algorithm.tasks import TaskShape
from ..algorithm.transfer import TransferChunk


@dataclass(frozen=True)
class RunInput:
    """What a run reads: the checked and indexed rows, and how the task reads each row."""

    index: RowIndex
    shape: TaskShape
    fixed: HumanLabels = HumanLabels()  # rows a person labelled (--fixed): held, never searched or transferred


@dataclass(frozen=True)
class Progress:
    """What a progress view shows."""

    phase: str  # "search" or "transfer"
    core: int
    cores: int
    step: Optional[Step]  # the search's last step (search phase)
    rows_done: int  # rows whose label is final
    rows: int
    transferred: int  # examples transferred so far
    to_transfer: int
    tokens_computed: int
    elapsed: float
    phase_elapsed: float
    eta: Optional[float]  # seconds left for the whole run
    monitor_agreement: Optional[float]


@dataclass(frozen=True)
class RunState:
    """Where a run is: labelled cores, the search state of the core in progress, the transfer
    calibration, and the finished transfer chunks (read lazily, in order, on resume)."""

    done: tuple[CoreOutcome, ...] = ()
    search: Optional[Any] = None  # SearchState
    centres: Optional[tuple[tuple[float, ...], ...]] = None
    calibrated: bool = False  # centres are final (None then means "not calibrating")
    chunks: Iterable[TransferChunk] = ()
    # core.count auto: why a second core is searched (set once decided, before its search).
    core_choice: Optional[str] = None
    core_kappa: Optional[float] = None


class Recorder(Protocol):
    """Where a run's progress is kept (the checkpoint)."""

    def save(self, state: RunState) -> None: ...

    def save_chunk(self, index: int, chunk: TransferChunk) -> None: ...


@dataclass
class RunSummary:
    config_hash: str
    data_hash: str
    model: str
    backend: str
    method: str
    seed: int
    rows: int
    examples: int
    cores: int
    core_rows: int = 0  # rows labelled by the core method (search)
    transfer_rows: int = 0  # rows labelled by transfer
    iterations: int = 0
    proposals: int = 0
    accepted: int = 0
    acceptance_rate: float = 0.0
    evaluations: int = 0
    final_utility: list[float] = field(default_factory=list)
    inconsistencies_left: int = 0
    converged_cores: int = 0
    zero_shot_averaged: bool = False  # every row's label averages in its zero-shot reading (zero_shot_rule)
    zero_shot_kappa: Optional[float] = None  # the many-shot reading's agreement with zero-shot, on a sample
    zero_shot_rule: Optional[str] = None  # what the rule chose, and why
    # core.count auto (second_core.py): whether a second core was searched, and why; the first
    # core's agreement with zero-shot it was decided on; each reading's weight (cores, zero-shot).
    second_core: Optional[bool] = None
    core_choice: Optional[str] = None
    core_kappa: Optional[float] = None
    reading_weights: Optional[list[float]] = None
    # With two cores and the zero-shot reading: whether the cores confirmed their departure from
    # zero-shot (else every label is the zero-shot reading), and the figures it was decided on.
    departure_confirmed: Optional[bool] = None
    departure: Optional[str] = None
    label_counts: dict[str, int] = field(default_factory=dict)
    mean_agreement: Optional[float] = None  # transfer rows, several cores only
    tokens_scored: int = 0
    tokens_requested: int = 0
    prefix_reuse: float = 0.0
    tokens_search: int = 0
    tokens_transfer: int = 0
    search_s: float = 0.0
    transfer_s: float = 0.0
    check_s: float = 0.0  # the signal check
    wall_time_s: float = 0.0
    signal: Optional[dict] = None  # the signal check's verdict and figures
    # The data's class shares estimated without gold, whether the labels take them, the labels'
    # own shares and a warning for a class collapsed or inflated against the estimate.
    class_shares: Optional[dict] = None
    # For `icm report`: each core's search over its iterations (search_trace.CoreTrace; thinned,
    # and from the resumed iteration on for a resumed run), and the signal check's sample as
    # read many-shot and zero-shot (signal_check.ReadingSample).
    search_trace: list[dict] = field(default_factory=list)
    readings: Optional[dict] = None
    # --fixed: rows written with a person's label (icm_source human), how many of them each core
    # held as demonstrations, how many of those the search's last reading of the first core would
    # have labelled otherwise, and the corrections' digest (a resume with others is refused).
    fixed_rows: int = 0
    fixed_demonstrations: int = 0
    fixed_disagreed: Optional[int] = None
    fixed_digest: Optional[str] = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
