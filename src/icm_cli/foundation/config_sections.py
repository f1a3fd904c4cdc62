"""The run configuration's sections as typed dataclasses, and the whole Config (its digest, the
settings a resume may change). Read from YAML by config_reading.py; backend_options.py holds the
backend section."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from .backend_options import BackendConfig

TaskType = Literal["classification", "claims", "comparison"]
Objective = Literal["mean_logodds", "sum_logprob"]
Schedule = Literal["log_flips", "paper"]
Method = Literal["icm", "bootstrap", "zero_shot"]


@dataclass(frozen=True)
class TaskConfig:
    type: TaskType = "classification"
    # Renders one input into the text the model reads before its label; `{field}` names input fields.
    template: str = "Input: {text}\nLabel:"
    # Label words. For claims and comparisons the first word means "true".
    labels: tuple[str, ...] = ("positive", "negative")
    # Put between the rendered input and the label word; a leading space is how most
    # tokenizers expect the next word, and scoring " True" after "is" is what has signal.
    label_prefix: str = " "
    separator: str = "\n\n"
    id_field: Optional[str] = None
    # claims: rows sharing a group value are checked against each other; rows with different
    # keys (e.g. final answers) cannot both be true, rows with the same key must agree.
    group_field: Optional[str] = None
    key_field: Optional[str] = None
    # comparison: the two candidate fields; the tool renders both orders itself.
    pair_fields: Optional[tuple[str, str]] = None
    # A gold field shown live as agreement; never read by the search.
    monitor_field: Optional[str] = None
    # Batch calibration: subtract from each example's label log-probabilities their mean over
    # the labelled set, so a label counts only where the input itself moves the model. Labelling
    # everything alike then scores P = 0 with two labels, and below 0 with more (see README). "auto": on for classification, off for
    # claims and comparisons, whose consistency constraints already rule that solution out.
    calibrate: Literal["auto", "on", "off"] = "auto"
    # The data's class shares where the user knows them (a base rate, not labels), e.g.
    # {negative: 0.4, neutral: 0.45, positive: 0.15}: the labels are matched to them (class_shares.py).
    # Batch calibration reads every class as equally common, and no gold-free estimate of the
    # shares held on held-out data with the embedded model (README "Class shares").
    class_shares: Optional[dict[str, float]] = None

    def calibrated(self) -> bool:
        return self.calibrate == "on" or (self.calibrate == "auto" and self.type == "classification")


@dataclass(frozen=True)
class SearchConfig:
    # How the core is labelled: icm (the annealing search), bootstrap (start from calibrated
    # zero-shot labels; each round relabels every core example with the others as context),
    # zero_shot (no core: every row is read alone, batch-calibrated for classification).
    method: Method = "icm"
    # icm's starting point: random seed labels (the paper), or the calibrated zero-shot labels.
    init: Literal["random", "zero_shot"] = "random"
    rounds: int = 3  # bootstrap rounds (it stops early when a round changes nothing)
    alpha: float = 30.0
    initial_labels: int = 8
    iterations: int = 3000
    fix_rounds: int = 10
    t0: float = 10.0
    t_min: float = 0.01
    schedule: Schedule = "log_flips"
    beta: float = 0.99
    objective: Objective = "mean_logodds"
    group_weight: float = 100.0
    seed: int = 0
    # After the iterations, greedy passes until no single proposal raises U. Off by default:
    # Algorithm 1 ends at whatever temperature the schedule reached, and on the shipped tweets
    # a quench raised U without raising agreement.
    final_quench: bool = False


@dataclass(frozen=True)
class CoreConfig:
    # The core is the sample the search labels: whole consistency groups drawn with the seed
    # until their demonstrations fill this many tokens. Every other row is labelled by the
    # core's labels as many-shot context (transfer), so a run's cost grows with the data only
    # through that cheap reading. It must leave room in the model's context for one query.
    max_tokens: int = 2048
    # Independent cores on disjoint samples; their transfer scores are averaged, and how many
    # agree on a row is written as icm_agreement. auto: one core, and a second where the first
    # core's reading departs from the model's zero-shot reading on a sample; then each reading
    # (the cores', the zero-shot one) is weighted by its agreement with the others
    # (run/second_core.py).
    count: Union[int, Literal["auto"]] = "auto"
    # `icm label --fixed`: the rows a person labelled join every core on top of its sample, as
    # demonstrations, up to this many tokens of them (unset: max_tokens; 0: none, the labels are
    # then only kept in the output). Those past it keep their labels but are no demonstrations.
    fixed_tokens: Optional[int] = None
    # count auto: the second core's demonstrations, in tokens (unset: half of max_tokens). It is
    # a second opinion on the first core, read beside it: with half the demonstrations its
    # search costs a fraction of the first's (benchmarks/one_run_history.md).
    second_tokens: Optional[int] = None

    def budget(self, core: int) -> int:
        """The demonstration tokens core number `core` (from 0) fills."""
        if self.count == "auto" and core > 0:
            return self.second_tokens if self.second_tokens is not None else max(1, self.max_tokens // 2)
        return self.max_tokens

    @property
    def planned(self) -> int:
        """The cores planned and searched up front (auto: one; a second may follow)."""
        return 1 if self.count == "auto" else self.count

    @property
    def several(self) -> bool:
        """Whether a run may have more than one core (its rows then carry icm_agreement)."""
        return self.count == "auto" or self.count > 1


@dataclass(frozen=True)
class TransferConfig:
    # Rows are transferred in chunks of this many examples: the unit of streaming output and of
    # checkpoints (a resumed run redoes at most the chunk it was killed in).
    chunk_size: int = 512
    # Batch calibration centres on the rows being transferred: the mean label scores of a seeded
    # sample of this many of them (all of them when fewer).
    calibration_size: int = 512
    # Whether each row's label averages its many-shot reading (after the cores' demonstrations;
    # for core rows, the search's leave-one-out one) with its zero-shot reading: auto where the
    # many-shot reading departs from zero-shot on a sample (zero_shot_rule.py; measured on held-out
    # tweets, README), on always, off never (the paper's many-shot reading alone).
    zero_shot: Literal["auto", "on", "off"] = "auto"
    # The data's class shares, estimated without gold on a sample (EM over the calibrated
    # readings, class_prior.py), added to every label's reading: batch calibration alone reads
    # every class as equally common and over-predicts a rare one. on: applied; auto and off: not
    # (with the embedded model it cut a common class to nothing: class_shares.py). The estimate
    # and the labels' shares are reported either way.
    class_prior: Literal["auto", "on", "off"] = "auto"


@dataclass(frozen=True)
class CheckConfig:
    # The gold-free signal check at the end of a run (signal_check.py): a sample of the rows read
    # zero-shot and scrambled. It changes no label; off, the summary has no verdict.
    signal: bool = True


@dataclass(frozen=True)
class RayConfig:
    """`icm label --engine ray`: the transfer's pool of actors. None of it changes a label."""

    actors: int = 1  # actors in the pool, each with its own backend (on GPUs: one per GPU)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # 1 for a vLLM backend on a GPU cluster
    batch_size: int = 512  # rows an actor labels, and writes as one shard, at a time
    # A local cluster only (RAY_ADDRESS unset): its CPUs (default: all) and object store.
    cpus: Optional[int] = None
    object_store_mib: int = 512


@dataclass(frozen=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    check: CheckConfig = field(default_factory=CheckConfig)

    def digest(self) -> str:
        """A short hash of every setting, so runs can say exactly what produced them."""
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def with_seed(self, seed: int) -> "Config":
        return dataclasses.replace(self, search=dataclasses.replace(self.search, seed=seed))


# Settings that cannot change a label: where and how requests are sent, and how much attention
# state is cached. A checkpoint may be resumed with these changed (a server back on another
# port, more patience); every other setting changes labels, and a changed one is refused.
RESUMABLE_KEYS = frozenset({
    "backend.openai.base_urls", "backend.openai.api_key_env", "backend.openai.timeout_s",
    "backend.openai.concurrency", "backend.openai.retries", "backend.openai.backoff_s",
    "backend.openai.prompts_per_request", "backend.hf.kv_cache_mib", "backend.vllm.kv_cache_mib",
    "backend.vllm.gpu_memory_utilization",
})


def resumable_key(key: str) -> bool:
    return key in RESUMABLE_KEYS or key.startswith(("ray.", "check."))
