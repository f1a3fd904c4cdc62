"""Command-line settings over the config file: `--set section.key=value`, `--model`, `--iterations`.

Each override is checked on its own by the same code that reads the YAML (so a bad one is
named as given on the command line), then merged into the file's settings, which are checked
again as a whole (cross-field rules such as comparison needing pair_fields). A backend's own
option is `backend.openai.timeout_s`; the flat `backend.timeout_s` of earlier versions works too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Optional, Sequence

import yaml

from .config import BACKEND_OPTIONS, FLAT_BACKEND_KEYS, Override, YamlLoader, section_types, setting_type
from .errors import InputError


def _keys(section: str) -> list[str]:
    """The section's keys, for messages (hf, vllm and openai: the backends' own options)."""
    return [f.name for f in dataclasses.fields(section_types()[section])]


def _known(section: str, key: str) -> bool:
    if key in _keys(section) and not (section == "backend" and key in BACKEND_OPTIONS):
        return True
    if section != "backend":
        return False
    owner, dot, name = key.partition(".")
    if dot:
        return owner in BACKEND_OPTIONS and name in {f.name for f in dataclasses.fields(BACKEND_OPTIONS[owner])}
    return key in FLAT_BACKEND_KEYS


def _check_path(path: str, given: str) -> tuple[str, str]:
    sections = section_types()
    section, dot, key = path.strip().partition(".")
    nested = key.count(".") == 1 and section == "backend" and key.split(".")[0] in BACKEND_OPTIONS
    if not dot or not key or ("." in key and not nested):
        raise InputError(f"{given}: expected section.key=value, e.g. search.iterations=500 "
                         f"(sections: {', '.join(sections)})")
    if section not in sections:
        raise InputError(f"{given}: unknown section '{section}'; sections are {', '.join(sections)}")
    if not _known(section, key):
        raise InputError(f"{given}: unknown key '{section}.{key}'; {section} has {', '.join(_keys(section))}")
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
    given = f"--set {text}"
    path, eq, raw = text.partition("=")
    if not eq:
        raise InputError(f"{given}: expected section.key=value, e.g. search.iterations=500")
    section, key = _check_path(path, given)
    hint = setting_type(section, key)
    try:
        value = yaml.load(raw, Loader=YamlLoader)
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
