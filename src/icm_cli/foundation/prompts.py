"""Templates: fill `{field}` placeholders with input fields, and nothing else.

str.format would allow `{x.__class__}` or `{x[0]}`; templates here name plain fields only,
so a config file can never reach into objects.
"""

from __future__ import annotations

import string
from typing import Mapping

_FORMATTER = string.Formatter()


def template_fields(template: str) -> tuple[str, ...]:
    """The field names a template uses, in order; ValueError if it is not a plain-field template."""
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as e:
        raise ValueError(f"is not a valid template ({e}); write literal braces as {{{{ and }}}}")
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"placeholder '{{{name}}}' must be a plain field name")
        if spec or conversion:
            raise ValueError(f"placeholder '{{{name}}}' may not carry a format spec or conversion")
        if name not in names:
            names.append(name)
    return tuple(names)


def render(template: str, fields: Mapping[str, str]) -> str:
    out: list[str] = []
    for literal, name, _, _ in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            out.append(fields[name])
    return "".join(out)
