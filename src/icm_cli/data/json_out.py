"""Values as icm writes them in text: JSON rows and documents (dates, bytes, decimals and numpy
values made JSON), CSV cells, and a run's summary laid out for people to read."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any, Iterable, Optional


def json_text(value: Any, indent: Optional[int] = None) -> str:
    """One JSON document, with the same handling of non-JSON values (dates, bytes, numpy) as rows get."""
    return json.dumps(value, ensure_ascii=False, default=json_default, indent=indent) + "\n"


def json_default(value: Any) -> Any:
    # Rows from Parquet or a Hugging Face dataset can hold values JSON has no type for.
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, default=json_default) + "\n" for r in rows)


def cell(value: Any) -> str:
    """A CSV cell: text as is, nothing for null, JSON for everything else (numbers, booleans,
    lists, objects), so a reader can tell `true` from "true" by the header's schema, not guess."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=json_default)


def summary_text(doc: Any) -> str:
    """A summary as people read it: objects a key a line, indented as json.dumps(indent=2) does,
    but a list of numbers or words (a search trace, the check's sample) on one line, not one value a
    line: thousands of lines of numbers would bury the few that people look for."""

    def flat(value: Any) -> bool:
        return not isinstance(value, dict) and (not isinstance(value, list) or all(flat(v) for v in value))

    def render(value: Any, level: int) -> str:
        pad, inner = "  " * level, "  " * (level + 1)
        if isinstance(value, dict) and value:
            items = [f"{inner}{json.dumps(k)}: {render(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and value and not flat(value):
            return "[\n" + ",\n".join(inner + render(v, level + 1) for v in value) + f"\n{pad}]"
        return json.dumps(value, separators=(", ", ": "))

    return render(doc, 0) + "\n"
