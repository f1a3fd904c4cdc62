"""The Label Studio side of tests/test_label_studio.py, run with the Python of Label Studio's own
virtual environment (label-studio pins Django, numpy and openai versions the project's .venv
must not take): everything here goes through the official SDK (label_studio_sdk), as a user's
script would.

    python label_studio_client.py URL TOKEN TASKS.json CONFIG.xml ANSWERS.json OUT_DIR

creates a project from CONFIG.xml, imports TASKS.json, reads every task back with its
predictions (OUT_DIR/tasks.json: id, data, predictions, in Label Studio's id order), annotates
the tasks ANSWERS.json names ({row id: label}) as a reviewer would, through the SDK, and writes
the project's JSON export (OUT_DIR/export.json), which is what `icm eval --gold` reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from label_studio_sdk import LabelStudio


def main(url: str, token: str, tasks_path: str, config_path: str, answers_path: str, out_dir: str) -> None:
    client = LabelStudio(base_url=url, api_key=token)
    out = Path(out_dir)
    project = client.projects.create(title="icm review", label_config=Path(config_path).read_text(encoding="utf-8"))
    tasks = json.loads(Path(tasks_path).read_text(encoding="utf-8"))
    imported = client.projects.import_tasks(id=project.id, request=tasks, return_task_ids=True)
    read = [t for t in client.tasks.list(project=project.id, fields="all")]
    back = []
    for task in sorted(read, key=lambda t: t.id):
        predictions = [{"model_version": p.model_version, "score": p.score, "result": p.result}
                       for p in client.predictions.list(task=task.id)]
        back.append({"id": task.id, "data": task.data, "predictions": predictions})
    (out / "tasks.json").write_text(json.dumps({"imported": imported.task_count, "tasks": back}), encoding="utf-8")

    answers = json.loads(Path(answers_path).read_text(encoding="utf-8"))
    for task in back:
        label = answers.get(str(task["data"]["id"]))
        if label is None:
            continue
        result = [{"from_name": "label", "to_name": task["predictions"][0]["result"][0]["to_name"],
                   "type": "choices", "value": {"choices": [label]}}]
        client.annotations.create(id=task["id"], result=result)
    export = b"".join(client.projects.exports.download_sync(project.id, export_type="JSON", download_all_tasks=True))
    (out / "export.json").write_bytes(export)


if __name__ == "__main__":
    main(*sys.argv[1:])
