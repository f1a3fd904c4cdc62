"""A review queue as Argilla 2.x reads it: records in the form `Dataset.records.to_json` writes
(`Record.from_dict` reads each; `dataset.records.log` uploads them) and the dataset settings in
the form `Settings.to_json` writes (`Settings.from_json` reads it).

Each record's id is the row id; its fields are the fields the template shows, as text; icm's
label is a suggestion (score = confidence, agent = "icm" and the run's config hash) on one label
question named `corrections.LABEL_CONTROL`; the confidence, `icm_source`, the readings, the
agreement of several cores and `icm_review_rank` are metadata declared in the settings (to filter
and sort by), and the row's other plain fields extra metadata. Argilla keeps no import order, so
`icm_review_rank` is what gives the queue its order there.

Written by hand rather than through the client: the client builds settings only while connected
to a server. The tests build the client's own objects from these files.
"""

from __future__ import annotations

from typing import Any, Optional

from ..foundation.config import TaskConfig
from ..data.corrections import LABEL_CONTROL
from ..foundation.prompts import template_fields
from .review_export import RANK_FIELD, ReviewQueue
from ..algorithm.tasks import AGREEMENT_FIELD, SOURCE_FIELD


def settings(queue: ReviewQueue, confidence_field: str) -> dict[str, Any]:
    task = queue.task
    metadata = [_metadata(confidence_field, "float"), _metadata(SOURCE_FIELD, "terms", ["core", "transfer", "human"]),
                _metadata(RANK_FIELD, "integer")]
    metadata += [_metadata(name, "float") for name in _float_fields(queue) if name != confidence_field]
    return {
        "guidelines": _guidelines(task),
        "questions": [{
            **_unsaved(), "name": LABEL_CONTROL, "title": LABEL_CONTROL, "description": None, "required": True,
            "dataset_id": None, "type": "label_selection",
            "settings": {"type": "label_selection", "options": [{"text": w, "value": w} for w in task.labels],
                         "visible_options": None},
        }],
        "fields": [{**_unsaved(), "name": name, "title": name, "required": True, "description": None,
                    "dataset_id": None, "type": "text", "settings": {"type": "text", "use_markdown": False}}
                   for name in template_fields(task.template)],
        "vectors": [],
        "metadata": metadata,
        "allow_extra_metadata": True,
        "distribution": {"strategy": "overlap", "min_submitted": 1},
        "mapping": None,
    }


def records(queue: ReviewQueue, confidence_field: str) -> list[dict[str, Any]]:
    shown = template_fields(queue.task.template)
    floats = set(_float_fields(queue))
    out = []
    for rank, item in enumerate(queue.items, start=1):
        metadata: dict[str, Any] = {confidence_field: item.confidence, RANK_FIELD: rank}
        for name, value in item.fields.items():
            if name in shown or name in (queue.label_field, confidence_field) or value is None:
                continue
            if name in floats and isinstance(value, (int, float)) and not isinstance(value, bool):
                metadata[name] = float(value)
            elif isinstance(value, (str, int, float, bool)):
                metadata[name] = value  # lists and objects have no metadata type in Argilla
        out.append({
            "id": item.row_id,
            "fields": {name: _text(item.fields.get(name)) for name in shown},
            "metadata": metadata,
            "suggestions": {LABEL_CONTROL: {"value": item.label, "score": item.confidence,
                                            "agent": f"icm {queue.model_version}"}},
            "responses": {},
            "vectors": {},
            "status": "pending",
            "_server_id": None,
        })
    return out


def _float_fields(queue: ReviewQueue) -> list[str]:
    """icm's number fields the rows carry: the readings where they are numbers, the cores' agreement."""
    names = [*queue.readings, AGREEMENT_FIELD]
    return [n for n in names if any(isinstance(i.fields.get(n), (int, float)) and not isinstance(i.fields.get(n), bool)
                                    for i in queue.items)]


def _metadata(name: str, kind: str, values: Optional[list[str]] = None) -> dict[str, Any]:
    settings: dict[str, Any] = {"visible_for_annotators": True, "type": kind}
    if kind == "terms":
        settings["values"] = values
    else:
        settings.update({"min": None, "max": None})
    return {**_unsaved(), "name": name, "settings": settings, "title": name, "visible_for_annotators": True,
            "dataset_id": None}


def _unsaved() -> dict[str, None]:
    # What the client writes for a property not yet created on a server.
    return {"id": None, "inserted_at": None, "updated_at": None}


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else str(value)


def _guidelines(task: TaskConfig) -> str:
    return (f"Choose the label that fits. icm's label is suggested, with its confidence; records are ranked "
            f"({RANK_FIELD}) with the most doubtful first. The model read each record as:\n\n{task.template}")
