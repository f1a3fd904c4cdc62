"""Command-line settings over the config file: `--set section.key=value`, `--model`, `--iterations`.

Each override is checked on its own by the same code that reads the YAML (so a bad one is
named as given on the command line), then merged into the file's settings, which are checked
again as a whole (cross-field rules such as comparison needing pair_fields).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import yaml

from .errors import InputError


@dataclass(frozen=True)
class Override:
    section: str
    key: str
    value: Any
    given: str  # as typed, for messages: "--set search.alpha=3", "--model org/name"

    @property
    def path(self) -> str:
        return f"{self.section}.{self.key}"


def _sections() -> dict[str, type]:
    from .config import Config

    return typing.get_type_hints(Config)


def _check_path(path: str, given: str) -> tuple[str, str]:
    sections = _sections()
    section, dot, key = path.strip().partition(".")
    if not dot or not key or "." in key:
        raise InputError(f"{given}: expected section.key=value, e.g. search.iterations=500 "
                         f"(sections: {', '.join(sections)})")
    if section not in sections:
        raise InputError(f"{given}: unknown section '{section}'; sections are {', '.join(sections)}")
    keys = [f.name for f in dataclasses.fields(sections[section])]
    if key not in keys:
        raise InputError(f"{given}: unknown key '{section}.{key}'; {section} has {', '.join(keys)}")
    return section, key


def _as_text(hint: Any, value: Any, raw: str) -> Any:
    """For a text setting, `1.5`, `a: b` or an empty value mean that text, not a number, a
    mapping or null (`null` still clears a setting that may be unset)."""
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and [
        a for a in typing.get_args(hint) if a is not type(None)] == [str]
    if hint is str and not isinstance(value, str):
        return raw
    if optional and value is not None and not isinstance(value, str):
        return raw
    return value


def parse_set(text: str) -> Override:
    """`section.key=value`, the value read as YAML (`[a, b]` is a list, `null` is none, `3` a number)."""
    from .config import _Loader

    given = f"--set {text}"
    path, eq, raw = text.partition("=")
    if not eq:
        raise InputError(f"{given}: expected section.key=value, e.g. search.iterations=500")
    section, key = _check_path(path, given)
    hint = typing.get_type_hints(_sections()[section])[key]
    try:
        value = yaml.load(raw, Loader=_Loader)
    except yaml.YAMLError:
        value = raw  # e.g. a template with a lone quote: meant as text
    return Override(section, key, _as_text(hint, value, raw), given)


def cli_overrides(sets: Sequence[str] = (), model: Optional[str] = None,
                  iterations: Optional[int] = None) -> list[Override]:
    """Every override the command line gives, in the order they apply (later wins)."""
    out = [parse_set(s) for s in sets]
    if model is not None:
        out.append(Override("backend", "model", model, f"--model {model}"))
    if iterations is not None:
        out.append(Override("search", "iterations", iterations, f"--iterations {iterations}"))
    return out


def apply_overrides(raw: dict[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """The file's settings with the overrides merged in; each checked as the YAML would be."""
    from .config import _build

    sections = _sections()
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for o in overrides:
        _build(sections[o.section], {o.key: o.value}, o.given, o.section)
        section = merged.get(o.section)
        if section is None:
            merged[o.section] = section = {}
        if isinstance(section, dict):
            section[o.key] = o.value
    return merged
