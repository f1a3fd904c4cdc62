import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from icm_cli.errors import InputError
from icm_cli.eval_command import eval_command, load_labels

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command("eval")(eval_command)
    # A second command keeps typer from collapsing the app into a single-command CLI,
    # so invocations look like the real `icm eval ...`.
    app.command("noop")(lambda: None)
    return app


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """10 gold items in mixed formats; predictions get 8 right, miss id 9, add id 'extra'."""
    gold_values: list[Any] = [True, 1, "1", "true", "TRUE", False, 0, "0", "false", 0.0]
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": i, "label": v} for i, v in enumerate(gold_values)])
    pred_values = [True, True, True, True, False, False, False, False, False]  # ids 0..8
    rows = [{"id": str(i), "label": v, "text": "..."} for i, v in enumerate(pred_values)]
    labels = _write_jsonl(tmp_path / "labels.jsonl", rows + [{"id": "extra", "label": True}])
    return labels, gold


def run(*args: str | Path) -> Any:
    return runner.invoke(_app(), ["eval", *map(str, args)])


def test_json_output(files: tuple[Path, Path]) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # exactly one JSON document
    assert {"n", "accuracy", "ci95", "kappa", "per_class", "confusion", "coverage", "min_accuracy", "passed"} <= data.keys()
    # ids 0..8 matched (int ids in gold match string ids in labels); 4 was predicted false.
    assert data["n"] == 9
    assert data["accuracy"] == pytest.approx(8 / 9)
    assert data["confusion"] == {"false": {"false": 4, "true": 0}, "true": {"false": 1, "true": 4}}
    assert data["coverage"] == {
        "gold_total": 10,
        "pred_total": 10,
        "missing_in_pred": 1,
        "missing_in_gold": 1,
        "missing_in_pred_examples": ["9"],
        "missing_in_gold_examples": ["extra"],
    }
    assert data["min_accuracy"] is None
    assert data["passed"] is True


def test_table_output(files: tuple[Path, Path]) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("Accuracy", "0.8889", "95% CI", "kappa", "precision", "recall", "support", "Confusion", "'extra'"):
        assert text in out
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_custom_fields(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"uid": "a", "pred": "Positive"}, {"uid": "b", "pred": "negative"}])
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"uid": "a", "sentiment": "positive"}, {"uid": "b", "sentiment": "positive"}])
    result = run(labels, "--gold", gold, "--id-field", "uid", "--label-field", "pred", "--gold-field", "sentiment", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["accuracy"] == 0.5
    assert data["confusion"]["positive"] == {"negative": 1, "positive": 1}


@pytest.mark.parametrize(("threshold", "code", "passed"), [("0", 0, True), ("0.88", 0, True), ("0.8889", 1, False), ("1", 1, False)])
def test_min_accuracy_exit_code(files: tuple[Path, Path], threshold: str, code: int, passed: bool) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--json", "--min-accuracy", threshold)
    assert result.exit_code == code
    data = json.loads(result.stdout)
    assert data["passed"] is passed
    assert data["min_accuracy"] == float(threshold)


def test_min_accuracy_equal_to_accuracy_passes(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": i, "label": i < 3} for i in range(4)])
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": i, "label": True} for i in range(4)])
    assert run(labels, "--gold", gold, "--min-accuracy", "0.75").exit_code == 0
    assert run(labels, "--gold", gold, "--min-accuracy", "0.7501").exit_code == 1


def test_min_accuracy_failure_shown_in_table(files: tuple[Path, Path]) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--min-accuracy", "0.95")
    assert result.exit_code == 1
    assert "FAILED" in result.stdout


def test_min_accuracy_out_of_range_is_usage_error(files: tuple[Path, Path]) -> None:
    labels, gold = files
    assert run(labels, "--gold", gold, "--min-accuracy", "1.5").exit_code == 2


def _error_message(*args: str | Path) -> str:
    result = run(*args)
    assert isinstance(result.exception, InputError), result.output
    return result.exception.message


def test_no_ids_in_common(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": 1, "label": 1}])
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 2, "label": 1}])
    message = _error_message(labels, "--gold", gold)
    assert message == f"no ids in common between {labels} and {gold} (id field 'id')"


def test_missing_file_through_cli(tmp_path: Path, files: tuple[Path, Path]) -> None:
    labels, _ = files
    missing = tmp_path / "nope.jsonl"
    assert _error_message(labels, "--gold", missing) == f"{missing}: file not found"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": 1, "label": 1}\n\n{"id": 2, "label": }\n', "{path}:3: invalid JSON (Expecting value)"),
        (b'{"id": 1, "label": 1}\n[1, 2]\n', "{path}:2: expected a JSON object, got array"),
        (b'{"id": 1, "label": 1}\n{"id": 2}\n', "{path}:2: field 'label' is missing"),
        (b'{"label": 1}\n', "{path}:1: field 'id' is missing"),
        (b'{"id": null, "label": 1}\n', "{path}:1: field 'id' must be a string or integer, not null"),
        (b'{"id": 1, "label": null}\n', "{path}:1: field 'label': null is not a label"),
        (b'{"id": 1, "label": " "}\n', "{path}:1: field 'label': an empty string is not a label"),
        (b'{"id": 17, "label": 1}\n{"id": 2, "label": 1}\n{"id": "17", "label": 0}\n', "{path}:3: duplicate id '17' (first on line 1)"),
        (b'{"id": 1, "label": "caf\xc3\xa9"}\n{"id": 2, "label": "\xff"}\n', "{path}: not UTF-8 (byte 0xff at offset 48)"),
        (b"\n  \n", "{path}: no records"),
    ],
)
# Offset 48 above: line 1 is 28 bytes ("é" takes two), then 20 bytes of line 2 before 0xff.
def test_bad_input_messages(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_labels(path, "id", "label")
    assert info.value.message == expected.format(path=path)
    assert "\n" not in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    with pytest.raises(InputError, match=r"x\.jsonl: file not found$"):
        load_labels(path, "id", "label")


def test_load_labels_tolerates_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "label": "Yes"}\r\n\r\n{"id": "b", "label": "1"}\r\n')
    assert load_labels(path, "id", "label") == {"1": "yes", "b": "true"}


def test_line_separator_inside_string_is_not_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text('{"id": 1, "label": "a\u2028b"}\n{"id": 2, "label": "c"}\n', encoding="utf-8")
    assert load_labels(path, "id", "label") == {"1": "a\u2028b", "2": "c"}
