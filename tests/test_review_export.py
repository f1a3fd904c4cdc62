"""`icm export --format label-studio|argilla`: the review queue's order, its two layouts, and bad
input refused in one line with nothing written.

Labels files are built by hand in the shape `icm label` writes (tests/test_label_studio.py runs
the real model and a real Label Studio). The Argilla files are read back by the argilla client's
own `Settings.from_json` and `Record.from_dict`, and compared with what the client builds itself.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.foundation.config import load_config
from icm_cli.data.output import atomic_write_texts

ROOT = Path(__file__).resolve().parents[1]
TWEETS = ROOT / "configs" / "tweets-sentiment.yaml"
GSM8K = ROOT / "configs" / "gsm8k-verification.yaml"
runner = CliRunner()


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _row(k: int, label: str, confidence: float, source: str = "transfer", **more) -> dict:
    return {"id": f"t{k}", "text": f"tweet number {k}", "label": label, "confidence": confidence,
            "icm_source": source, **more}


def _export(*args) -> object:
    return runner.invoke(app, ["export", *map(str, args)])


def _tasks(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))


def _files(tmp_path: Path) -> set[str]:
    return {p.name for p in tmp_path.iterdir()}


def test_disputed_rows_come_first_then_the_least_confident_and_review_keeps_the_first_n(tmp_path):
    rows = [
        _row(0, "positive", 0.55, icm_many_shot=0.7, icm_zero_shot=0.8),  # agree, low confidence
        _row(1, "negative", 0.91, icm_many_shot=0.9, icm_zero_shot=0.3),  # readings disagree
        _row(2, "positive", 0.51, "core", icm_many_shot=0.6, icm_zero_shot=0.6),  # agree, lowest confidence
        _row(3, "negative", 0.62, icm_many_shot="negative", icm_zero_shot="positive"),  # words that disagree
        _row(4, "positive", 0.99, icm_many_shot={"positive": 0.2, "negative": 0.8}, icm_zero_shot=0.99),
        _row(5, "negative", 0.55, icm_many_shot=0.8, icm_zero_shot=0.7),  # ties row 0: file order
    ]
    labels = _write(tmp_path / "labels.jsonl", rows)
    (tmp_path / "labels.jsonl.summary.json").write_text(json.dumps({"config_hash": "abc123def456"}))
    out = tmp_path / "tasks.json"
    result = _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", out)
    assert result.exit_code == 0, result.output
    tasks = _tasks(out)
    assert [t["data"]["id"] for t in tasks] == ["t3", "t1", "t4", "t2", "t0", "t5"]
    assert [t["data"]["icm_review_rank"] for t in tasks] == [1, 2, 3, 4, 5, 6]
    first = tasks[0]
    # icm's label is the prediction, not data; its other fields stay as data
    assert first["data"] == {"id": "t3", "text": "tweet number 3", "confidence": 0.62, "icm_source": "transfer",
                             "icm_many_shot": "negative", "icm_zero_shot": "positive", "icm_review_rank": 1}
    assert first["predictions"] == [{"model_version": "abc123def456", "score": 0.62, "result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["negative"]}}]}]
    assert "6 rows in, 6 to review; 3 where the readings disagree first, then least confident first" in result.stderr
    assert (tmp_path / "tasks.label_config.xml").is_file()

    cut = tmp_path / "cut.json"
    result = _export(labels, "-c", TWEETS, "--format", "label-studio", "--review", "2", "-o", cut)
    assert result.exit_code == 0, result.output
    assert [t["data"]["id"] for t in _tasks(cut)] == ["t3", "t1"]
    assert "6 rows in, 2 to review (left out: 4 past --review)" in result.stderr


def test_without_readings_the_queue_is_least_confident_first_and_several_cores_disagreeing_come_first(tmp_path):
    rows = [_row(0, "positive", 0.8), _row(1, "negative", 0.6), _row(2, "positive", 0.7, "core"),
            _row(3, "negative", 0.95)]
    labels = _write(tmp_path / "plain.jsonl", rows)
    out = tmp_path / "plain.json"
    result = _export(labels, "-c", TWEETS, "--format", "label-studio", "--source", "transfer", "-o", out)
    assert result.exit_code == 0, result.output
    assert [t["data"]["id"] for t in _tasks(out)] == ["t1", "t0", "t3"]
    assert "least confident first (no readings in the rows to compare)" in result.stderr
    assert "(left out: 1 not from the chosen --source)" in result.stderr
    # the model_version without a summary beside the labels: the hash of the config given
    assert _tasks(out)[0]["predictions"][0]["model_version"] == load_config(TWEETS).digest()

    cores = [_row(0, "positive", 0.6, icm_agreement=1.0), _row(1, "negative", 0.9, icm_agreement=0.67)]
    labels = _write(tmp_path / "cores.jsonl", cores)
    result = _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", tmp_path / "cores.json")
    assert result.exit_code == 0, result.output
    assert [t["data"]["id"] for t in _tasks(tmp_path / "cores.json")] == ["t1", "t0"]


def test_another_id_field_is_the_argilla_record_id(tmp_path):
    rows = [{"uid": 7, "text": "a", "label": "negative", "confidence": 0.6, "icm_source": "core"}]
    labels = _write(tmp_path / "uid.jsonl", rows)
    out = tmp_path / "uid.json"
    result = _export(labels, "-c", TWEETS, "--format", "argilla", "--id-field", "uid", "-o", out)
    assert result.exit_code == 0, result.output
    assert _tasks(out)[0]["id"] == "7"


def test_the_labelling_config_shows_the_template_fields_and_offers_the_label_words(tmp_path):
    rows = [{"id": "q0s0", "consistency_id": 0, "question": "What is 2 + 2?", "cot": "So 4.", "answer": "4",
             "label": "True", "confidence": 0.7, "icm_source": "core"}]
    labels = _write(tmp_path / "gsm8k.jsonl", rows)
    result = _export(labels, "-c", GSM8K, "--format", "label-studio", "-o", tmp_path / "claims.json")
    assert result.exit_code == 0, result.output
    view = ET.fromstring((tmp_path / "claims.label_config.xml").read_text())
    assert [(e.tag, dict(e.attrib)) for e in view] == [
        ("Header", {"value": "question"}), ("Text", {"name": "question", "value": "$question"}),
        ("Header", {"value": "cot"}), ("Text", {"name": "cot", "value": "$cot"}),
        ("Choices", {"name": "label", "toName": "question", "choice": "single", "showInLine": "true"})]
    assert [c.attrib["value"] for c in view.find("Choices")] == ["True", "False"]
    task = _tasks(tmp_path / "claims.json")[0]
    assert task["predictions"][0]["result"][0]["value"] == {"choices": ["True"]}
    assert task["predictions"][0]["result"][0]["to_name"] == "question"


def test_argilla_files_are_what_the_argilla_client_builds_and_reads(tmp_path):
    rg = pytest.importorskip("argilla")
    from argilla_offline import argilla_client

    rows = [_row(0, "positive", 0.9, extra={"nested": 1}, note="kept"), _row(1, "negative", 0.6, "core"),
            _row(2, "positive", 0.7, icm_agreement=0.5)]
    labels = _write(tmp_path / "labels.jsonl", rows)
    (tmp_path / "labels.jsonl.summary.json").write_text(json.dumps({"config_hash": "feedface0000"}))
    out = tmp_path / "records.json"
    result = _export(labels, "-c", TWEETS, "--format", "argilla", "-o", out)
    assert result.exit_code == 0, result.output
    assert "Argilla records to" in result.stderr and "records.settings.json" in result.stderr

    with argilla_client():
        settings = rg.Settings.from_json(tmp_path / "records.settings.json")
        expected = rg.Settings(
            guidelines=settings.guidelines,
            fields=[rg.TextField(name="text", title="text")],
            questions=[rg.LabelQuestion(name="label", title="label", labels=["positive", "negative"])],
            metadata=[rg.FloatMetadataProperty(name="confidence"),
                      rg.TermsMetadataProperty(name="icm_source", options=["core", "transfer", "human"]),
                      rg.IntegerMetadataProperty(name="icm_review_rank"),
                      rg.FloatMetadataProperty(name="icm_agreement")],
            allow_extra_metadata=True)
        assert settings == expected  # the file is exactly what the client itself writes
        assert "Tweet: {text}" in settings.guidelines

        records = [rg.Record.from_dict(d) for d in json.loads(out.read_text())]
        assert [r.id for r in records] == ["t2", "t1", "t0"]  # cores disagreeing first, then by confidence
        first, _, last = records
        assert first.fields["text"] == "tweet number 2"
        assert first.suggestions["label"].value == "positive"
        assert first.suggestions["label"].score == 0.7
        assert first.suggestions["label"].agent == "icm feedface0000"
        assert first.metadata["icm_agreement"] == 0.5 and first.metadata["icm_review_rank"] == 1
        assert last.metadata["note"] == "kept" and "extra" not in last.metadata  # no metadata type for objects
        for record in records:
            model = record.api_model()  # the payload the client would send to a server
            assert model.external_id == record.id
            assert record.suggestions["label"].value in settings.questions["label"].labels


@pytest.mark.parametrize("rows, message", [
    ([{"text": "no id", "label": "positive", "confidence": 0.6, "icm_source": "core"}],
     "labels.jsonl:1: field 'id' (the row id; set task.id_field or pass --id-field) is missing"),
    ([_row(0, "neutral", 0.6)], "labels.jsonl:1: field 'label' is 'neutral', not one of the config's labels"),
    ([_row(0, "positive", 0.6), _row(1, "positive", 1.5)], "labels.jsonl:2: field 'confidence' must be a number"),
    ([_row(0, "positive", 0.6, icm_zero_shot="perhaps")], "labels.jsonl:1: field 'icm_zero_shot' must be a number"),
    ([_row(0, "positive", 0.6), _row(0, "negative", 0.7)], "labels.jsonl:2: duplicate id 't0'"),
])
def test_bad_rows_are_one_line_naming_file_line_and_field_and_nothing_is_written(tmp_path, rows, message):
    labels = _write(tmp_path / "labels.jsonl", rows)
    before = _files(tmp_path)
    result = _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", tmp_path / "tasks.json")
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert _files(tmp_path) == before


@pytest.mark.parametrize("args, message", [
    (["--format", "label-studio"], "--format label-studio writes two files"),
    (["--format", "argilla", "-o", "x.jsonl"], "end -o with .json"),
    (["--format", "label-studio", "--chat", "-o", "x.json"], "--chat does not apply to --format label-studio"),
    (["--format", "argilla", "--push-to-hub", "org/x", "-o", "x.json"], "--push-to-hub does not apply"),
    (["--format", "label-studio", "--review", "0", "-o", "x.json"], "--review is 0, must be at least 1"),
    (["--format", "classification", "--review", "5"], "--review applies to --format label-studio and argilla"),
])
def test_options_that_do_not_fit_are_refused_before_anything_is_read(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = _export(tmp_path / "absent.jsonl", "-c", TWEETS, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert _files(tmp_path) == set()


def test_existing_files_need_force_and_a_directory_beside_is_never_replaced(tmp_path):
    labels = _write(tmp_path / "labels.jsonl", [_row(0, "positive", 0.6)])
    out = tmp_path / "tasks.json"
    assert _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", out).exit_code == 0
    again = _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", out)
    assert again.exit_code == 2 and "already exists; pass --force" in again.stderr
    assert _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", out, "--force").exit_code == 0

    (tmp_path / "other.label_config.xml").mkdir()
    refused = _export(labels, "-c", TWEETS, "--format", "label-studio", "-o", tmp_path / "other.json", "--force")
    assert refused.exit_code == 2 and "other.label_config.xml: is a directory" in refused.stderr
    assert not (tmp_path / "other.json").exists()


def test_the_two_files_appear_together_or_not_at_all(tmp_path):
    first, second = tmp_path / "tasks.json", tmp_path / "missing-dir" / "tasks.label_config.xml"
    with pytest.raises(FileNotFoundError):
        atomic_write_texts([(first, "[]\n"), (second, "<View/>\n")])
    assert _files(tmp_path) == set()  # neither file, nor a temporary one
