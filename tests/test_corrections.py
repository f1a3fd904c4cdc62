"""corrections.py: labels people gave, read back from a Label Studio export, an Argilla export or
any labelled file as {row id -> label}; and `icm eval --gold` reading them.

The Label Studio tasks below have the shape Label Studio 1.23's JSON export gives (checked
against a real server in tests/test_label_studio.py); the Argilla records are made by the argilla
client itself (`Record.to_dict`, what `Dataset.records.to_json` writes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.data.corrections import fixed_labels, load_corrections
from icm_cli.foundation.errors import InputError

runner = CliRunner()


def _annotation(label, *, cancelled=False, truth=False, control="label", choices=None):
    value = {"choices": choices if choices is not None else [label]}
    return {"id": 1, "completed_by": 1, "was_cancelled": cancelled, "ground_truth": truth,
            "result": [{"from_name": control, "to_name": "text", "type": "choices", "value": value}],
            "created_at": "2026-12-04T18:57:01Z", "task": 1, "project": 1}


def _task(task_id: int, row_id, *annotations) -> dict:
    return {"id": task_id, "data": {"id": row_id, "text": f"text {row_id}", "confidence": 0.6,
                                    "icm_source": "core", "icm_review_rank": task_id},
            "annotations": list(annotations), "drafts": [], "predictions": [task_id], "meta": {},
            "total_annotations": len(annotations), "project": 1}


def _json(path: Path, value) -> str:
    path.write_text(json.dumps(value), encoding="utf-8")
    return str(path)


def test_a_label_studio_export_gives_each_answered_task_its_label(tmp_path):
    export = _json(tmp_path / "export.json", [
        _task(1, "t1", _annotation("negative")),
        _task(2, "t2"),  # nobody answered yet
        _task(3, "t3", _annotation("positive", cancelled=True)),  # skipped: no answer
        _task(4, 7, _annotation("Positive"), _annotation("negative"), _annotation("positive")),  # majority
        _task(5, "t5", _annotation("negative"), _annotation("positive", truth=True)),  # ground truth wins
    ])
    got = load_corrections(export)
    assert got.format == "label-studio"
    assert got.labels == {"t1": "negative", "7": "positive", "t5": "positive"}
    assert got.unanswered == 2
    assert got.places["7"] == f"{export}: item 4 (task 4)"
    assert fixed_labels(export, ("positive", "negative")) == {"t1": "negative", "7": "positive", "t5": "positive"}


@pytest.mark.parametrize("tasks, message", [
    ([_task(1, "t1", _annotation("negative"), _annotation("positive"))],
     "item 1 (task 1): the answers tie ('negative' (1), 'positive' (1))"),
    ([_task(1, "t1", _annotation("negative", control="sentiment"))],
     "item 1 (task 1): its annotations answer sentiment, not 'label'; name that control as the label field"),
    ([_task(1, "t1", _annotation("x", choices=["positive", "negative"]))],
     "item 1 (task 1): field 'annotations[0].result': 'label' must hold one choice"),
    ([_task(1, "t1", _annotation("negative")), _task(2, "t1", _annotation("negative"))],
     "item 2 (task 2): duplicate id 't1'"),
    ([{"id": 1, "data": {"text": "no id"}, "annotations": []}], "item 1 (task 1): field 'data.id' (the row id) is missing"),
    ([_task(1, True, _annotation("negative"))], "item 1 (task 1): field 'data.id' must be a string or integer"),
    ([_task(1, "t1"), _task(2, "t2")], "none of its 2 items has a label yet (label-studio export)"),
    ([_task(1, "t1", _annotation("negative")), "not a task"], "item 2: is a string, not an object"),
])
def test_a_bad_label_studio_export_is_one_line_naming_the_item_and_field(tmp_path, tasks, message):
    export = _json(tmp_path / "export.json", tasks)
    with pytest.raises(InputError) as e:
        load_corrections(export)
    assert f"{export}: " in e.value.message and message in e.value.message
    assert "\n" not in e.value.message


def test_broken_json_names_its_line_and_a_label_outside_the_config_names_its_task(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"id": 1,\n  "data": {"id": "t1"}\n  "annotations": []}\n]\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"broken.json:4: not valid JSON \(Expecting ',' delimiter, column 3\)"):
        load_corrections(str(broken))
    export = _json(tmp_path / "export.json", [_task(1, "t1", _annotation("neutral"))])
    with pytest.raises(InputError, match=r"export.json: item 1 \(task 1\): label 'neutral' \(id 't1'\) is not one of "
                                         r"the config's labels \(positive, negative\)"):
        fixed_labels(export, ("positive", "negative"))


def test_json_min_rows_jsonl_and_csv_read_as_rows(tmp_path):
    # Label Studio's JSON-MIN export: flat rows, the control's answer under its name
    mini = _json(tmp_path / "min.json", [{"id": "t1", "text": "a", "label": "positive", "annotator": 1},
                                         {"id": "t2", "text": "b", "label": "negative", "annotator": 1}])
    assert load_corrections(mini).labels == {"t1": "positive", "t2": "negative"}
    assert load_corrections(mini).format == "json rows"
    lines = tmp_path / "fix.jsonl"
    lines.write_text('{"id": "t1", "label": "Negative"}\n{"id": 2, "label": "positive"}\n', encoding="utf-8")
    got = load_corrections(str(lines))
    assert got.labels == {"t1": "negative", "2": "positive"} and got.places["2"] == f"{lines}:2"
    as_icm_writes = tmp_path / "labels.json"  # icm label -o x.json writes JSON lines
    as_icm_writes.write_text('{"id": "t1", "label": "positive"}\n', encoding="utf-8")
    assert load_corrections(str(as_icm_writes)).format == "rows"
    table = tmp_path / "fix.csv"
    table.write_text("id,verdict\nt1,positive\nt9,neutral\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"fix.csv:3: label 'neutral' \(id 't9'\) is not one of"):
        fixed_labels(str(table), ("positive", "negative"), label_field="verdict")
    with pytest.raises(InputError, match=r"min.json: item 1: field 'verdict' is missing"):
        load_corrections(mini, label_field="verdict")


def _argilla_export(tmp_path: Path) -> str:
    rg = pytest.importorskip("argilla")
    from argilla_offline import argilla_client

    someone, other = "00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"
    with argilla_client():
        records = [
            rg.Record(id="t1", fields={"text": "a"}, responses=[rg.Response("label", "negative", user_id=someone)]),
            rg.Record(id="t2", fields={"text": "b"}),  # nobody answered
            rg.Record(id="t3", fields={"text": "c"}, responses=[
                rg.Response("label", "positive", user_id=someone), rg.Response("label", "positive", user_id=other)]),
        ]
        dicts = [r.to_dict() for r in records]
    # Argilla's JSON export keeps no response status; where a status is given, only submitted counts.
    dicts[2]["responses"]["label"].append({"value": "negative", "user_id": "c", "status": "draft"})
    dicts[2]["responses"]["label"].append({"value": "negative", "user_id": "d", "status": "discarded"})
    return _json(tmp_path / "records.json", dicts)


def test_an_argilla_export_gives_each_answered_record_its_label(tmp_path):
    export = _argilla_export(tmp_path)
    got = load_corrections(export)
    assert got.format == "argilla"
    assert got.labels == {"t1": "negative", "t3": "positive"}
    assert got.unanswered == 1
    with pytest.raises(InputError, match=r"records.json: item 1: its responses answer label, not 'sentiment'"):
        load_corrections(export, label_field="sentiment")


def test_eval_reads_label_studio_and_argilla_exports_as_gold(tmp_path):
    rows = [{"id": f"t{k}", "text": "x", "label": label, "confidence": 0.6, "icm_source": "core"}
            for k, label in enumerate(["positive", "negative", "positive", "negative"], start=1)]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    export = _json(tmp_path / "export.json", [_task(1, "t1", _annotation("positive")),
                                              _task(2, "t2", _annotation("positive")),
                                              _task(3, "t3")])
    result = runner.invoke(app, ["eval", str(labels), "--gold", export, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 2 and report["accuracy"] == 0.5 and report["coverage"]["gold_total"] == 2

    argilla = _argilla_export(tmp_path)
    result = runner.invoke(app, ["eval", str(labels), "--gold", argilla, "--json", "--min-accuracy", "0.9"])
    assert result.exit_code == 1, result.output  # t1 said negative (icm: positive), t3 positive (icm too)
    report = json.loads(result.stdout)
    assert (report["n"], report["accuracy"]) == (2, 0.5)
    assert "accuracy 0.5000 < --min-accuracy 0.9" in result.stderr


def test_eval_with_a_bad_export_is_one_line_and_exit_2(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": "t1", "label": "positive"}\n', encoding="utf-8")
    export = _json(tmp_path / "export.json", [_task(1, "t1", _annotation("positive", control="sentiment"))])
    result = runner.invoke(app, ["eval", str(labels), "--gold", export])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"icm: error: {export}: item 1 (task 1): its annotations answer sentiment, "
                                     f"not 'label'; name that control as the label field")
    result = runner.invoke(app, ["eval", str(labels), "--gold", export, "--gold-field", "sentiment", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["accuracy"] == 1.0
