"""`icm export`: turn a labels file into the rows a fine-tuning library reads as-is.

One format per task type, because each task's labels mean a different training signal:
- classification -> `text`/`label` (a sequence classifier; the label word, or a ClassLabel on disk);
- claims -> `prompt`/`completion`, the claims judged true only (supervised fine-tuning);
- comparison -> `prompt`/`chosen`/`rejected` (TRL's DPOTrainer and RewardTrainer).

Comparison rows map one to one to preference pairs. A consistency group (task.group_field)
only told the search which pairs to look at together: ICM checked each pair's two orders
against each other, never transitivity across a group's pairs, so no pairs are derived from
a group here. Two rows that compare the same two candidates for the same prompt and disagree
would pull a trainer both ways; both are dropped (counted as contradictory).
Pure logic, except for the two writers at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from ..foundation.config import TaskConfig
from ..data.tables import Dataset, Row, probability, text_field
from ..foundation.errors import InputError
from ..data.labels_io import label_position
from ..data.output import check_replaceable, replace_refusal
from ..foundation.prompts import template_fields
from ..algorithm.tasks import SOURCE_FIELD


Format = Literal["preference", "classification", "prompt-completion"]
Source = Literal["core", "transfer", "human", "all"]
FORMAT_FOR_TASK: dict[str, Format] = {
    "comparison": "preference",
    "classification": "classification",
    "claims": "prompt-completion",
}
SOURCES: tuple[str, ...] = ("core", "transfer", "human", "all")


@dataclass(frozen=True)
class ExportOptions:
    format: str
    _: KW_ONLY  # the rest by name: ten flags in a row are too easy to swap
    min_confidence: Optional[float] = None
    source: str = "all"
    label_field: str = "label"
    confidence_field: str = "confidence"
    # Conversational rows (lists of {"role", "content"} messages) instead of plain strings.
    chat: bool = False
    # Standard format only: put before each completion / chosen / rejected text. TRL joins a
    # prompt and its completion as they are (its docs write {"prompt": "The sky is",
    # "completion": " blue."}), so without it "question?answer" would run together.
    separator: str = "\n"
    text_field: Optional[str] = None  # classification: the input the classifier reads
    prompt_field: Optional[str] = None  # preference, prompt-completion
    completion_field: Optional[str] = None  # prompt-completion


@dataclass
class Dropped:
    source: int = 0
    confidence: int = 0
    label: int = 0  # claims: judged false
    contradictory: int = 0  # comparison: the same pair chosen both ways
    identical: int = 0  # comparison: both candidates the same text


@dataclass
class Export:
    format: str
    rows: list[dict[str, Any]]
    rows_in: int
    dropped: Dropped = field(default_factory=Dropped)
    class_names: Optional[tuple[str, ...]] = None  # classification: the ClassLabel's names


def export_rows(dataset: Dataset, task: TaskConfig, opts: ExportOptions, config_name: str = "config") -> Export:
    _check_options(task, opts, config_name)
    positions = _label_positions(dataset, task, opts.label_field)
    dropped = Dropped()
    kept: list[tuple[Row, int]] = []
    for row, position in zip(dataset.rows, positions):
        if opts.source != "all" and _source(dataset, row) != opts.source:
            dropped.source += 1
            continue
        if opts.min_confidence is not None and _confidence(dataset, row, opts.confidence_field) < opts.min_confidence:
            dropped.confidence += 1
            continue
        kept.append((row, position))
    result = Export(opts.format, [], len(dataset.rows), dropped)
    if opts.format == "classification":
        field_name = opts.text_field or _only_field(task, "text")
        result.rows = [{"text": text_field(dataset.at(row), row.fields, field_name, "the exported text"), "label": task.labels[y]}
                       for row, y in kept]
        result.class_names = tuple(task.labels)
    elif opts.format == "prompt-completion":
        prompt_name, completion_name = _claim_fields(task, opts)
        for row, y in kept:
            if y != 0:  # the first label word means true; only true claims are worth imitating
                dropped.label += 1
                continue
            prompt = text_field(dataset.at(row), row.fields, prompt_name, "the exported prompt")
            completion = text_field(dataset.at(row), row.fields, completion_name, "the exported completion")
            result.rows.append(_prompt_completion(prompt, completion, opts))
    else:
        result.rows = _preferences(dataset, task, opts, kept, dropped)
    return result


def _check_options(task: TaskConfig, opts: ExportOptions, config_name: str) -> None:
    if opts.format not in FORMAT_FOR_TASK.values():
        raise InputError(f"--format is {opts.format!r}, must be one of preference, classification, prompt-completion")
    fits = FORMAT_FOR_TASK[task.type]
    if opts.format != fits:
        raise InputError(f"--format {opts.format} does not fit {config_name}, a {task.type} task; use --format {fits}")
    if opts.source not in SOURCES:
        raise InputError(f"--source is {opts.source!r}, must be one of {', '.join(SOURCES)}")
    if opts.min_confidence is not None and not math.isfinite(opts.min_confidence):
        raise InputError(f"--min-confidence is {opts.min_confidence}, must be a finite number")
    if opts.chat and opts.format == "classification":
        raise InputError("--chat applies to preference and prompt-completion; classification rows are text/label")
    misplaced = {
        "--text-field": opts.text_field is not None and opts.format != "classification",
        "--prompt-field": opts.prompt_field is not None and opts.format == "classification",
        "--completion-field": opts.completion_field is not None and opts.format != "prompt-completion",
    }
    for flag, wrong in misplaced.items():
        if wrong:
            raise InputError(f"{flag} does not apply to --format {opts.format}")


def _label_positions(dataset: Dataset, task: TaskConfig, label_field: str) -> list[int]:
    """Each row's label as its index in task.labels (True/"true"/1 match a "True" label word)."""
    out = []
    for row in dataset.rows:
        if label_field not in row.fields:
            raise InputError(f"{dataset.source}:{row.line}: field '{label_field}' (the label) is missing; "
                             f"pass --label-field if icm label wrote another name")
        value = row.fields[label_field]
        position = label_position(value, task.labels)
        if position is None:
            raise InputError(f"{dataset.source}:{row.line}: field '{label_field}' is {value!r}, "
                             f"not one of the config's labels ({', '.join(task.labels)})")
        out.append(position)
    return out


def _source(dataset: Dataset, row: Row) -> str:
    value = row.fields.get(SOURCE_FIELD)
    if value not in ("core", "transfer", "human"):
        got = "missing" if SOURCE_FIELD not in row.fields else repr(value)
        raise InputError(f"{dataset.source}:{row.line}: field '{SOURCE_FIELD}' is {got}, must be core, transfer or human "
                         f"(as icm label writes it)")
    return value


def _confidence(dataset: Dataset, row: Row, name: str) -> float:
    if name not in row.fields:
        raise InputError(f"{dataset.source}:{row.line}: field '{name}' (the confidence) is missing; "
                         f"pass --confidence-field if icm label wrote another name")
    return probability(row.fields[name], f"{dataset.source}:{row.line}: field '{name}'")


def _only_field(task: TaskConfig, what: str, exclude: Sequence[str] = ()) -> str:
    names = [n for n in template_fields(task.template) if n not in exclude]
    if len(names) != 1:
        listed = ", ".join(names) if names else "no other field"
        raise InputError(f"the template uses {listed}; pass --{what}-field to name the field to export as {what}")
    return names[0]


def _claim_fields(task: TaskConfig, opts: ExportOptions) -> tuple[str, str]:
    """A claim's prompt and completion: by default the template's two fields, in its order
    (e.g. "Question: {question}\\nClaim: {choice}" -> question, choice)."""
    names = list(template_fields(task.template))
    if opts.prompt_field and opts.completion_field:
        return opts.prompt_field, opts.completion_field
    if opts.prompt_field or opts.completion_field:
        known = opts.prompt_field or opts.completion_field
        rest = [n for n in names if n != known]
        if len(rest) != 1:
            missing = "--completion-field" if opts.prompt_field else "--prompt-field"
            raise InputError(f"the template uses {', '.join(names)}; pass {missing} as well")
        return (known, rest[0]) if opts.prompt_field else (rest[0], known)
    if len(names) != 2:
        raise InputError(f"the template uses {', '.join(names)}; pass --prompt-field and --completion-field "
                         f"to say which is the prompt and which the claim")
    return names[0], names[1]


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _prompt_completion(prompt: str, completion: str, opts: ExportOptions) -> dict[str, Any]:
    if opts.chat:
        return {"prompt": _user(prompt), "completion": _assistant(completion)}
    return {"prompt": prompt, "completion": opts.separator + completion}


def _preferences(dataset: Dataset, task: TaskConfig, opts: ExportOptions,
                 kept: list[tuple[Row, int]], dropped: Dropped) -> list[dict[str, Any]]:
    first, second = task.pair_fields  # type: ignore[misc]
    # No field besides the pair (a template of the two candidates only): TRL's implicit-prompt
    # form, where each candidate is the whole text.
    others = [n for n in template_fields(task.template) if n not in (first, second)]
    prompt_name = opts.prompt_field or (_only_field(task, "prompt", (first, second)) if others else None)
    pairs: list[tuple[Optional[str], str, str]] = []
    for row, y in kept:
        a = text_field(dataset.at(row), row.fields, first, "first candidate")
        b = text_field(dataset.at(row), row.fields, second, "second candidate")
        if a == b:
            dropped.identical += 1
            continue
        prompt = text_field(dataset.at(row), row.fields, prompt_name, "the exported prompt") if prompt_name else None
        pairs.append((prompt, a, b) if y == 0 else (prompt, b, a))  # label word 0: the first is better
    winners: dict[tuple[Optional[str], frozenset[str]], set[str]] = {}
    for prompt, chosen, rejected in pairs:
        winners.setdefault((prompt, frozenset((chosen, rejected))), set()).add(chosen)
    out = []
    for prompt, chosen, rejected in pairs:
        if len(winners[(prompt, frozenset((chosen, rejected)))]) > 1:
            dropped.contradictory += 1
            continue
        out.append(_preference(prompt, chosen, rejected, opts))
    return out


def _preference(prompt: Optional[str], chosen: str, rejected: str, opts: ExportOptions) -> dict[str, Any]:
    if prompt is None:
        if opts.chat:
            return {"chosen": _assistant(chosen), "rejected": _assistant(rejected)}
        return {"chosen": chosen, "rejected": rejected}
    if opts.chat:
        return {"prompt": _user(prompt), "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
    return {"prompt": prompt, "chosen": opts.separator + chosen, "rejected": opts.separator + rejected}


def export_summary(result: Export, opts: ExportOptions) -> str:
    """Rows in, rows kept, and what each filter dropped, on one line."""
    d = result.dropped
    parts = []
    if opts.source != "all":
        parts.append(f"{d.source} not from {opts.source}")
    if opts.min_confidence is not None:
        parts.append(f"{d.confidence} under confidence {opts.min_confidence:g}")
    if result.format == "prompt-completion":
        parts.append(f"{d.label} claims judged false")
    if result.format == "preference":
        parts.append(f"{d.contradictory} contradictory pairs")
        if d.identical:
            parts.append(f"{d.identical} with identical candidates")
    why = f" (dropped: {', '.join(parts)})" if parts else ""
    return f"{result.rows_in:,} rows in, {len(result.rows):,} kept{why}"


# ---- writing


@dataclass(frozen=True)
class Destination:
    path: Optional[Path]  # None: stdout
    directory: bool  # a `datasets` directory (Dataset.save_to_disk) rather than JSONL


def destination(out: Optional[str], labels: str, force: bool) -> Destination:
    """`-o x.jsonl`: a JSONL file; `-o dir/` or a name without a suffix: a datasets directory.
    Any other suffix is refused, so `-o x.json` never becomes a directory by surprise."""
    if out is None or out == "-":
        return Destination(None, False)
    path = Path(out)
    if out.endswith(("/", os.sep)) or path.is_dir() or path.suffix == "":
        directory = True
    elif path.suffix.lower() == ".jsonl":
        directory = False
    else:
        raise InputError(f"{out}: -o takes a .jsonl file or a directory (for Dataset.save_to_disk), "
                         f"not a {path.suffix} file")
    if labels != "-" and path.resolve() == Path(labels).resolve():
        raise InputError(f"{out}: output would overwrite the input file; choose another -o")
    check_replaceable(path, force, directory, shown=out)
    if not path.resolve().parent.exists():
        raise InputError(f"{out}: directory {path.parent} does not exist")
    return Destination(path, directory)


def to_dataset(result: Export):
    """The rows as a `datasets.Dataset`; classification labels as a ClassLabel (names = label words),
    the form transformers' sequence classifiers read as id2label."""
    import datasets

    if result.class_names is None:
        return datasets.Dataset.from_list(result.rows)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(result.class_names))})
    return datasets.Dataset.from_list(result.rows, features=features)


def save_directory(result: Export, path: Path) -> None:
    """save_to_disk into a sibling temp directory, then swap it in: never a half-written OUT."""
    # This is the code that deletes the old OUT, so it applies the rule itself as well
    # rather than trust that every caller ran destination() first.
    why = replace_refusal(path, directory=True)
    if why is not None:
        raise InputError(f"{path}: {why}; choose another -o")
    parent = path.resolve().parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    old = None
    try:
        to_dataset(result).save_to_disk(str(tmp))
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            os.replace(path, old / "replaced")
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "replaced").exists() and not path.exists():
            os.replace(old / "replaced", path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
