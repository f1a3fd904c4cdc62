"""A review queue as Label Studio imports it: a JSON array of tasks and the labelling
configuration (XML) for the task's label set.

Each task's `data` is the labelled row less icm's label (which is the prediction instead) plus
`icm_review_rank`: the input fields the template shows, the id, and icm's own fields
(`confidence`, `icm_source`, the readings) to filter and sort by in Label Studio's data manager.
icm's label is a prediction (a pre-annotation the annotator accepts or changes) whose `score` is
the confidence and `model_version` the run's config hash. Tasks are in review order, so Label
Studio's ids follow it too. The one control is a single-choice `Choices` named
`corrections.LABEL_CONTROL`, which is what `icm eval --gold` reads back from Label Studio's export.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from ..foundation.config import TaskConfig
from ..data.corrections import LABEL_CONTROL
from ..foundation.errors import InputError
from ..foundation.prompts import template_fields
from .review_export import RANK_FIELD, ReviewQueue


def label_config(task: TaskConfig) -> str:
    """The labelling configuration: each field the template shows as text (headed by its name
    when there are several), then one choice among the config's label words."""
    names = shown_fields(task)
    view = ET.Element("View")
    for name in names:
        if len(names) > 1:
            ET.SubElement(view, "Header", value=name)
        ET.SubElement(view, "Text", name=name, value=f"${name}")
    choices = ET.SubElement(view, "Choices", name=LABEL_CONTROL, toName=names[0], choice="single",
                            showInLine="true")
    for word in task.labels:
        ET.SubElement(choices, "Choice", value=word)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode") + "\n"


def shown_fields(task: TaskConfig) -> tuple[str, ...]:
    names = template_fields(task.template)
    if not names:
        raise InputError("the config's template uses no field, so a review task would show nothing")
    if LABEL_CONTROL in names:
        # Label Studio names controls and objects in one namespace.
        raise InputError(f"the template shows a field named '{LABEL_CONTROL}', the name the review's label "
                         f"control takes in Label Studio; rename that input field")
    return names


def tasks(queue: ReviewQueue) -> list[dict[str, Any]]:
    to_name = shown_fields(queue.task)[0]
    out = []
    for rank, item in enumerate(queue.items, start=1):
        data = {k: v for k, v in item.fields.items() if k != queue.label_field}
        data[RANK_FIELD] = rank
        prediction = {
            "model_version": queue.model_version,
            "score": item.confidence,
            "result": [{"from_name": LABEL_CONTROL, "to_name": to_name, "type": "choices",
                        "value": {"choices": [item.label]}}],
        }
        out.append({"data": data, "predictions": [prediction]})
    return out
