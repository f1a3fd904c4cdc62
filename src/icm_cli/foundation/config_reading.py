"""Reading the configuration: a YAML file (1.2 booleans) and `--set` overrides into the typed
sections, the flat backend keys of earlier versions spread into each backend's options, and the
task's settings checked together. Each value is checked by config_values.py."""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from .backend_options import BACKEND_OPTIONS, FLAT_BACKEND_KEYS, BackendCommon, BackendConfig
from .config_sections import Config, TaskConfig
from .config_values import build_section, reject_unknown
from .errors import InputError


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
    reject_unknown(raw, sections, source, "")
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
    reject_unknown(common, {**known, **FLAT_BACKEND_KEYS}, source, "backend.")
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


def _check_task(task: TaskConfig, source: str) -> None:
    if len(task.labels) < 2:
        raise InputError(f"{source}: 'task.labels' has {len(task.labels)} word; a label set needs at least two")
    if len(set(task.labels)) != len(task.labels):
        raise InputError(f"{source}: 'task.labels' repeats a word")
    if task.type in ("claims", "comparison") and len(task.labels) != 2:
        raise InputError(f"{source}: 'task.labels' for {task.type} must be two words (true first, then false)")
    if task.type == "comparison" and not task.pair_fields:
        raise InputError(f"{source}: 'task.pair_fields' is required for comparison tasks (the two candidate fields)")
    if task.class_shares is not None:
        _check_shares(task, source)
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


def _check_shares(task: TaskConfig, source: str) -> None:
    shares = task.class_shares or {}
    if task.type != "classification":
        raise InputError(f"{source}: 'task.class_shares' is for classification; {task.type} labels follow "
                         f"their consistency constraints")
    for word in shares:
        if word not in task.labels:
            raise InputError(f"{source}: 'task.class_shares.{word}': '{word}' is not one of task.labels "
                             f"({', '.join(task.labels)})")
    for word in task.labels:
        if word not in shares:
            raise InputError(f"{source}: 'task.class_shares' gives no share for '{word}' (give one for every label)")
        if not 0 < shares[word] < 1:
            raise InputError(f"{source}: 'task.class_shares.{word}' is {shares[word]}, must be between 0 and 1")
    total = sum(shares.values())
    if abs(total - 1) > 0.02:
        raise InputError(f"{source}: 'task.class_shares' sum to {total:.3g}, must sum to 1")
