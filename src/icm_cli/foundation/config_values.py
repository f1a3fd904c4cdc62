"""One setting's value checked: its type (coerced from YAML), its range and the keys a section
knows, with one-line errors naming `section.key` and where it was given."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

from .backend_options import FLAT_BACKEND_KEYS
from .errors import InputError


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
    "core.second_tokens": (64, None),
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


def build_section(cls: type, values: dict[str, Any], source: str, section: str) -> Any:
    """A config section (or a backend's options) from a mapping, each value checked, one-line
    errors naming `section.key` and `source`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    reject_unknown(values, fields, source, section + ".")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        kwargs[name] = _coerce(value, hints[name], source, key)
        bounds = _RANGES.get(key)
        if bounds and isinstance(kwargs[name], (int, float)):
            low, high = bounds
            if (low is not None and kwargs[name] < low) or (high is not None and kwargs[name] > high):
                raise InputError(f"{source}: '{key}' is {value}, must be {'> 0' if low == 1e-9 else f'>= {low}'}")
    return cls(**kwargs)


def reject_unknown(values: dict[str, Any], known: dict[str, Any], source: str, prefix: str) -> None:
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
        errors = []
        for each in inner:  # in order: e.g. an integer, else a word (core.count: 2 or auto)
            try:
                return _coerce(value, each, source, key)
            except InputError as e:
                errors.append(e)
        if len(inner) == 1:
            raise errors[0]
        kinds = {int: "an integer", float: "a number", str: "a string"}
        words = [str(w) for h in inner for w in (typing.get_args(h) if typing.get_origin(h) is Literal
                                                    else (kinds.get(h, str(h)),))]
        raise InputError(f"{source}: '{key}' is {value!r}, must be {' or '.join(words)}")
    if origin is Literal:
        if value not in args:
            raise InputError(f"{source}: '{key}' is {value!r}, must be one of {', '.join(map(str, args))}")
        return value
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise InputError(f"{source}: '{key}' must be a mapping of words to numbers")
        return {str(k): _coerce(v, args[1], source, f"{key}.{k}") for k, v in value.items()}
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
