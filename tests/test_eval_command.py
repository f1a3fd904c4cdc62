"""`icm eval` through the real CLI (typer's CliRunner): gates, label sets, --map, file formats,
stdin, and accuracy by confidence and by icm_source. No model is loaded."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from icm_cli import cli
from icm_cli.commands import label as label_command
from icm_cli.foundation.errors import InputError
from icm_cli.data.labels_io import load_labels
from icm_cli.algorithm.tasks import SOURCE_FIELD

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_datasets_progress_bars() -> Any:
    # CSV/Parquet load through `datasets`, whose first-load bars would add lines to stderr here;
    # whether the CLI shows them is the loader's business, not eval's.
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


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


def run(*args: str | Path, input: bytes | None = None) -> Any:
    return runner.invoke(cli.app, ["eval", *map(str, args)], input=input)


def _json(result: Any) -> dict[str, Any]:
    return json.loads(result.stdout)  # exactly one JSON document


def _error_message(*args: str | Path, input: bytes | None = None) -> str:
    """The one-line error of a usage/input failure (exit 2, nothing on stdout)."""
    result = run(*args, input=input)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: error: "), result.stderr
    assert result.stdout == ""
    return lines[0].removeprefix("icm: error: ")


# --------------------------------------------------------------------------------------------
# the report


def test_json_output(files: tuple[Path, Path]) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--json", "--min-coverage", "0.9")
    assert result.exit_code == 0, result.output
    data = _json(result)
    assert {"n", "accuracy", "ci95", "kappa", "per_class", "confusion", "coverage", "min_accuracy", "passed"} <= data.keys()
    # ids 0..8 matched (int ids in gold match string ids in labels); 4 was predicted false.
    assert data["n"] == 9
    assert data["accuracy"] == pytest.approx(8 / 9)
    assert data["confusion"] == {"false": {"false": 4, "true": 0}, "true": {"false": 1, "true": 4}}
    assert data["coverage"] == {
        "labelled_fraction": 0.9,
        "gold_total": 10,
        "pred_total": 10,
        "missing_in_pred": 1,
        "missing_in_gold": 1,
        "missing_in_pred_examples": ["9"],
        "missing_in_gold_examples": ["extra"],
    }
    assert data["min_accuracy"] is None
    assert data["min_coverage"] == 0.9
    assert data["passed"] is True and data["failures"] == [] and data["warnings"] == []
    assert data["by_confidence"] is None and data["by_source"] is None  # neither field in the labels
    assert data["label_map"] == {}


def test_table_output(files: tuple[Path, Path]) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--min-coverage", "0.9")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("Accuracy", "0.8889", "95% CI", "kappa", "precision", "recall", "support", "Confusion", "'extra'",
                 "Coverage gate", "passed"):
        assert text in out
    assert "Accuracy by confidence" not in out and "icm_source" not in out
    assert "\x1b[" not in out  # not a terminal: no colour codes
    assert result.stderr == ""


def test_custom_fields(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"uid": "a", "pred": "Positive"}, {"uid": "b", "pred": "negative"}])
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"uid": "a", "sentiment": "positive"}, {"uid": "b", "sentiment": "positive"}])
    result = run(labels, "--gold", gold, "--id-field", "uid", "--label-field", "pred", "--gold-field", "sentiment", "--json")
    assert result.exit_code == 0, result.output
    data = _json(result)
    assert data["accuracy"] == 0.5
    assert data["confusion"]["positive"] == {"negative": 1, "positive": 1}


# --------------------------------------------------------------------------------------------
# --min-accuracy


@pytest.mark.parametrize(("threshold", "code", "passed"), [("0", 0, True), ("0.88", 0, True), ("0.8889", 1, False), ("1", 1, False)])
def test_min_accuracy_exit_code(files: tuple[Path, Path], threshold: str, code: int, passed: bool) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--json", "--min-accuracy", threshold, "--min-coverage", "0.9")
    assert result.exit_code == code
    data = _json(result)
    assert data["passed"] is passed
    assert data["min_accuracy"] == float(threshold)
    assert len(data["failures"]) == (0 if passed else 1)


def test_min_accuracy_equal_to_accuracy_passes(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": i, "label": i < 3} for i in range(4)])
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": i, "label": True} for i in range(4)])
    assert run(labels, "--gold", gold, "--min-accuracy", "0.75").exit_code == 0
    assert run(labels, "--gold", gold, "--min-accuracy", "0.7501").exit_code == 1


def test_min_accuracy_failure_shown_in_table_and_on_stderr(files: tuple[Path, Path]) -> None:
    labels, gold = files
    result = run(labels, "--gold", gold, "--min-accuracy", "0.95", "--min-coverage", "0.9")
    assert result.exit_code == 1
    assert "Accuracy gate" in result.stdout and "FAILED" in result.stdout
    assert result.stderr.splitlines() == ["icm: eval failed: accuracy 0.8889 < --min-accuracy 0.95 (on 9 matched ids)"]


@pytest.mark.parametrize("option", ["--min-accuracy", "--min-coverage"])
@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_gate_out_of_range_is_usage_error(files: tuple[Path, Path], option: str, value: str) -> None:
    labels, gold = files
    assert run(labels, "--gold", gold, option, value).exit_code == 2


# --------------------------------------------------------------------------------------------
# --min-coverage: every gold id must have a label unless told otherwise


def _gold_64(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "gold.jsonl", [{"id": f"t{i:02d}", "label": "positive" if i % 2 else "negative"}
                                                  for i in range(64)])


def _labels_for(tmp_path: Path, count: int) -> Path:
    """Correct labels for the first `count` of the 64 gold ids."""
    return _write_jsonl(tmp_path / "labels.jsonl", [{"id": f"t{i:02d}", "label": "positive" if i % 2 else "negative"}
                                                    for i in range(count)])


def test_one_right_row_of_64_fails_the_default_coverage_gate(tmp_path: Path) -> None:
    gold, labels = _gold_64(tmp_path), _labels_for(tmp_path, 1)
    result = run(labels, "--gold", gold, "--min-accuracy", "0.9", "--json")
    assert result.exit_code == 1
    data = _json(result)
    assert data["accuracy"] == 1.0  # the one row is right; coverage is what fails
    assert data["passed"] is False and data["min_coverage"] == 1.0
    assert data["coverage"]["labelled_fraction"] == pytest.approx(1 / 64)
    assert len(data["failures"]) == 1 and data["failures"][0].startswith("63 of 64 gold ids are unlabelled")
    # One line says it (a warning may add that gold's 'positive' is never predicted).
    failed = [x for x in result.stderr.splitlines() if not x.startswith("icm: warning: ")]
    assert failed == [f"icm: eval failed: {data['failures'][0]}"]
    assert "'t01', 't02'" in failed[0]  # names a few, in gold order

    table = run(labels, "--gold", gold, "--min-accuracy", "0.9")
    assert table.exit_code == 1
    assert "Coverage gate" in table.stdout and "FAILED" in table.stdout
    assert table.stderr == result.stderr


@pytest.mark.parametrize(("labelled", "min_coverage", "code"), [
    (64, None, 0), (63, None, 1), (32, "0.5", 0), (32, "0.51", 1), (1, "0", 0),
])
def test_min_coverage_boundary(tmp_path: Path, labelled: int, min_coverage: str | None, code: int) -> None:
    gold, labels = _gold_64(tmp_path), _labels_for(tmp_path, labelled)
    extra = ["--min-coverage", min_coverage] if min_coverage is not None else []
    result = run(labels, "--gold", gold, "--json", *extra)
    assert result.exit_code == code, result.stderr
    assert _json(result)["passed"] is (code == 0)
    assert ("icm: eval failed: " in result.stderr) is (code == 1)


def test_labelled_ids_missing_from_gold_do_not_count_against_coverage(tmp_path: Path) -> None:
    gold = _gold_64(tmp_path)
    labels = _labels_for(tmp_path, 64)
    with labels.open("a") as f:
        f.write(json.dumps({"id": "not-in-gold", "label": "positive"}) + "\n")
    assert run(labels, "--gold", gold).exit_code == 0


def test_both_gates_failing_give_two_lines(tmp_path: Path) -> None:
    gold = _gold_64(tmp_path)
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": "t00", "label": "positive"}])  # wrong
    result = run(labels, "--gold", gold, "--min-accuracy", "0.5", "--json")
    assert result.exit_code == 1
    assert len(_json(result)["failures"]) == 2
    lines = [x for x in result.stderr.splitlines() if x.startswith("icm: eval failed: ")]
    assert len(lines) == 2 and "63 of 64" in lines[0] and "accuracy 0.0000 < --min-accuracy 0.5" in lines[1]
    # One wrong row is not a vocabulary mismatch: 'positive' is a gold label, though not on t00.
    assert "no label in common" not in result.stderr


# --------------------------------------------------------------------------------------------
# label sets and --map


def _binary(tmp_path: Path, gold_labels: list[Any], pred_labels: list[Any]) -> tuple[Path, Path]:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": i, "label": v} for i, v in enumerate(gold_labels)])
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": i, "label": v} for i, v in enumerate(pred_labels)])
    return labels, gold


def test_disjoint_label_sets_exit_2_and_suggest_map(tmp_path: Path) -> None:
    labels, gold = _binary(tmp_path, [1, 0, 1, 0], ["positive", "negative", "negative", "negative"])
    message = _error_message(labels, "--gold", gold)
    assert message.startswith("no label in common:")
    for part in (str(labels), "'negative', 'positive'", str(gold), "'false', 'true'", "--map GOLD=PRED"):
        assert part in message


@pytest.mark.parametrize("spelling", [("1", "0"), ("true", "false"), ("True", "0.0")])
def test_map_makes_gold_comparable(tmp_path: Path, spelling: tuple[str, str]) -> None:
    labels, gold = _binary(tmp_path, [1, 0, 1, 0], ["positive", "negative", "negative", "negative"])
    one, zero = spelling
    result = run(labels, "--gold", gold, "--map", f"{one}=positive", "--map", f"{zero}=Negative", "--json")
    assert result.exit_code == 0, result.stderr
    data = _json(result)
    assert data["accuracy"] == 0.75
    assert data["labels"] == ["negative", "positive"]
    assert data["label_map"] == {"true": "positive", "false": "negative"}
    assert data["warnings"] == [] and result.stderr == ""


def test_map_applies_to_gold_labels_only(tmp_path: Path) -> None:
    labels, gold = _binary(tmp_path, ["pos", "neg"], ["pos", "neg"])
    result = run(labels, "--gold", gold, "--map", "pos=positive", "--json")
    assert result.exit_code == 0
    # gold 'pos' now reads 'positive'; the prediction 'pos' is left alone, so it no longer matches.
    assert _json(result)["accuracy"] == 0.5


def test_typo_in_predictions_is_warned_not_silently_a_class(tmp_path: Path) -> None:
    labels, gold = _binary(tmp_path, ["positive", "negative", "positive", "negative"],
                           ["positive", "negative", "pos", "negative"])
    result = run(labels, "--gold", gold, "--json")
    assert result.exit_code == 0
    data = _json(result)
    assert data["accuracy"] == 0.75
    assert data["warnings"] == [f"{labels} has labels {gold} never uses: 'pos' (1 row)"]
    assert result.stderr.splitlines() == [f"icm: warning: {data['warnings'][0]}"]


def test_gold_label_never_predicted_is_warned(tmp_path: Path) -> None:
    labels, gold = _binary(tmp_path, ["positive", "negative", "negative"], ["positive", "positive", "positive"])
    result = run(labels, "--gold", gold)
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [f"icm: warning: {gold} has labels {labels} never predicts: 'negative' (2 rows)"]


def test_same_label_sets_give_no_warning(tmp_path: Path) -> None:
    labels, gold = _binary(tmp_path, ["positive", "negative"], ["negative", "positive"])
    result = run(labels, "--gold", gold)
    assert result.exit_code == 0 and result.stderr == ""


@pytest.mark.parametrize(("maps", "expected"), [
    (["1"], "--map '1': expected GOLD=PREDICTED, e.g. --map 1=positive"),
    (["=positive"], "--map '=positive': an empty string is not a label"),
    (["1= "], "--map '1= ': an empty string is not a label"),
    (["1=positive", "true=negative"], "--map 'true=negative': gold label 'true' is already mapped by --map '1=positive'"),
    (["2=positive"], "--map '2=positive': {gold} has no label '2' (its labels: 'false', 'true')"),
    (["pos=positive"], "--map 'pos=positive': {gold} has no label 'pos' (its labels: 'false', 'true')"),
])
def test_bad_map_is_a_usage_error(tmp_path: Path, maps: list[str], expected: str) -> None:
    labels, gold = _binary(tmp_path, [1, 0], ["positive", "negative"])
    args = [a for m in maps for a in ("--map", m)]
    assert _error_message(labels, "--gold", gold, *args) == expected.format(gold=gold)


def test_repeating_the_same_map_is_fine(tmp_path: Path) -> None:
    labels, gold = _binary(tmp_path, [1, 0], ["positive", "negative"])
    result = run(labels, "--gold", gold, "--map", "1=positive", "--map", "true=positive", "--map", "0=negative")
    assert result.exit_code == 0, result.stderr


# --------------------------------------------------------------------------------------------
# file formats and stdin: the loader `icm label` uses


ROWS_PRED = [{"id": i, "label": lab} for i, lab in enumerate(["positive", "negative", "positive", "negative", "negative"])]
ROWS_GOLD = [{"id": i, "label": lab} for i, lab in enumerate(["positive", "negative", "negative", "negative", "positive", "positive"])]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    if path.suffix == ".jsonl":
        return _write_jsonl(path, rows)
    if path.suffix == ".csv":
        columns = list(rows[0])
        path.write_text(",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows))
        return path
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


@pytest.mark.parametrize("pred_kind", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("gold_kind", ["jsonl", "csv", "parquet"])
def test_csv_and_parquet_read_like_jsonl(tmp_path: Path, pred_kind: str, gold_kind: str) -> None:
    labels = _write(tmp_path / f"labels.{pred_kind}", ROWS_PRED)
    gold = _write(tmp_path / f"gold.{gold_kind}", ROWS_GOLD)
    result = run(labels, "--gold", gold, "--json", "--min-coverage", "0")
    assert result.exit_code == 0, result.stderr
    data = _json(result)
    assert (data["n"], data["accuracy"]) == (5, 0.6)
    assert data["confusion"] == {"negative": {"negative": 2, "positive": 1}, "positive": {"negative": 1, "positive": 1}}
    assert data["coverage"]["missing_in_pred_examples"] == ["5"]


def test_labels_from_stdin(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", ROWS_GOLD)
    stdin = "".join(json.dumps(r) + "\n" for r in ROWS_PRED).encode()
    result = run("-", "--gold", gold, "--json", "--min-coverage", "0", input=stdin)
    assert result.exit_code == 0, result.stderr
    assert _json(result)["accuracy"] == 0.6


def test_gold_from_stdin(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", ROWS_PRED)
    stdin = "".join(json.dumps(r) + "\n" for r in ROWS_GOLD).encode()
    result = run(labels, "--gold", "-", "--json", "--min-coverage", "0", input=stdin)
    assert result.exit_code == 0, result.stderr
    assert _json(result)["accuracy"] == 0.6


def test_stdin_errors_name_stdin_and_line(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", ROWS_GOLD)
    message = _error_message("-", "--gold", gold, input=b'{"id": 1, "label": "positive"}\n{"id": 2}\n')
    assert message == "<stdin>:2: field 'label' is missing"


def test_both_from_stdin_is_refused(tmp_path: Path) -> None:
    assert _error_message("-", "--gold", "-", input=b"") == "LABELS and --gold cannot both be - (stdin)"


def test_csv_errors_name_file_line_and_field(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", ROWS_PRED)
    gold = tmp_path / "gold.csv"
    gold.write_text("id,label\n0,positive\n1,\n2,negative\n")  # line 3 has no label
    message = _error_message(labels, "--gold", gold)
    # The empty cell reads as null or as "" depending on the CSV reader's settings: not a label either way.
    assert message.startswith(f"{gold}:3: field 'label': ") and message.endswith(" is not a label")
    gold.write_text("id,sentiment\n0,positive\n")
    assert _error_message(labels, "--gold", gold) == f"{gold}:2: field 'label' is missing"


def test_parquet_error_names_file_row_and_field(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    labels = _write_jsonl(tmp_path / "labels.jsonl", ROWS_PRED)
    gold = tmp_path / "gold.parquet"
    datasets.Dataset.from_list([{"id": 0, "label": "positive"}, {"id": 0, "label": "negative"}]).to_parquet(str(gold))
    message = _error_message(labels, "--gold", gold)
    assert message.startswith(str(gold)) and "2" in message and "duplicate id '0'" in message


# --------------------------------------------------------------------------------------------
# accuracy by confidence and by icm_source

# (gold, predicted, confidence, icm_source) for ids 0..9
SCORED = [
    ("positive", "positive", 0.99, "core"),
    ("positive", "positive", 0.97, "core"),
    ("negative", "negative", 0.93, "core"),
    ("negative", "positive", 0.91, "transfer"),
    ("positive", "positive", 0.85, "transfer"),
    ("negative", "negative", 0.75, "transfer"),
    ("negative", "positive", 0.65, "transfer"),
    ("positive", "negative", 0.55, "transfer"),
    ("negative", "negative", 0.52, "core"),
    ("positive", "negative", 0.50, "transfer"),
]


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, Path]:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": i, "label": g} for i, (g, _, _, _) in enumerate(SCORED)])
    labels = _write_jsonl(tmp_path / "labels.jsonl", [
        {"id": i, "text": "...", "label": p, "confidence": c, SOURCE_FIELD: s} for i, (_, p, c, s) in enumerate(SCORED)
    ])
    return labels, gold


def _expected_by_confidence(threshold: float) -> tuple[int, float | None]:
    kept = [g == p for g, p, c, _ in SCORED if c >= threshold]
    return len(kept), (sum(kept) / len(kept) if kept else None)


def test_accuracy_by_confidence_json(scored: tuple[Path, Path]) -> None:
    labels, gold = scored
    result = run(labels, "--gold", gold, "--json")
    assert result.exit_code == 0, result.stderr
    rows = _json(result)["by_confidence"]
    assert [r["threshold"] for r in rows] == [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    for row in rows:
        n, accuracy = _expected_by_confidence(row["threshold"])
        assert (row["n"], row["accuracy"]) == (n, pytest.approx(accuracy) if accuracy is not None else None)
        assert row["coverage"] == pytest.approx(n / 10)
    # Spot checks by hand: >= 0.9 keeps ids 0-3, three right; >= 0.99 keeps id 0 only.
    assert (rows[5]["n"], rows[5]["accuracy"]) == (4, 0.75)
    assert (rows[7]["n"], rows[7]["correct"], rows[7]["ci95"]) == (1, 1, [1.0, 1.0])


def test_accuracy_by_source_json(scored: tuple[Path, Path]) -> None:
    labels, gold = scored
    by_source = _json(run(labels, "--gold", gold, "--json"))["by_source"]
    assert set(by_source) == {"core", "transfer"}
    assert (by_source["core"]["n"], by_source["core"]["accuracy"]) == (4, 1.0)
    assert (by_source["transfer"]["n"], by_source["transfer"]["correct"]) == (6, 2)


def test_confidence_and_source_tables(scored: tuple[Path, Path]) -> None:
    labels, gold = scored
    result = run(labels, "--gold", gold, "--thresholds", "0.9,0.5")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Accuracy by confidence" in out and f"Accuracy by {SOURCE_FIELD}" in out
    line_09 = next(x for x in out.splitlines() if x.strip("│┃ ").startswith("0.9 "))
    cells = [c.strip() for c in line_09.strip("│").split("│")]
    assert cells[:4] == ["0.9", "4", "40.0%", "0.7500"]
    assert "0 (all)" not in out  # only the cut-offs asked for
    assert "core" in out and "transfer" in out


def test_empty_slice_shows_dash(scored: tuple[Path, Path]) -> None:
    labels, gold = scored
    data = _json(run(labels, "--gold", gold, "--thresholds", "1", "--json"))
    assert data["by_confidence"] == [{"threshold": 1.0, "coverage": 0.0, "n": 0, "correct": 0, "accuracy": None, "ci95": None}]
    table = run(labels, "--gold", gold, "--thresholds", "1").stdout
    row = next(x for x in table.splitlines() if x.strip("│┃ ").startswith("1 "))
    assert [c.strip() for c in row.strip("│").split("│")] == ["1", "0", "0.0%", "-", "-"]


def test_confidence_as_text_is_read_as_a_number(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}])
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label,confidence\n1,a,0.9\n2,a,0.6\n")
    data = _json(run(labels, "--gold", gold, "--thresholds", "0.8", "--json"))
    assert [(r["n"], r["accuracy"]) for r in data["by_confidence"]] == [(1, 1.0)]


def test_custom_confidence_field(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}])
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": 1, "label": "a", "p": 0.9}, {"id": 2, "label": "a", "p": 0.6}])
    data = _json(run(labels, "--gold", gold, "--confidence-field", "p", "--thresholds", "0.8", "--json"))
    [row] = data["by_confidence"]
    assert (row["threshold"], row["coverage"], row["n"], row["accuracy"]) == (0.8, 0.5, 1, 1.0)


@pytest.mark.parametrize(("value", "expected"), [
    ('"high"', "must be a number from 0 to 1, got 'high'"),
    ('"1.5"', "must be a number from 0 to 1, got '1.5'"),
    ("1.5", "must be a number from 0 to 1, got 1.5"),
    ("-0.1", "must be a number from 0 to 1, got -0.1"),
    ("true", "must be a number from 0 to 1, got boolean"),
    ("null", "must be a number from 0 to 1, got null"),
    ("NaN", "must be a number from 0 to 1, got nan"),
])
def test_bad_confidence_names_line_and_field(tmp_path: Path, value: str, expected: str) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}])
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": 1, "label": "a", "confidence": 0.9}\n{"id": 2, "label": "b", "confidence": ' + value + "}\n")
    assert _error_message(labels, "--gold", gold) == f"{labels}:2: field 'confidence' {expected}"


def test_confidence_on_some_rows_only(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}])
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": 1, "label": "a"}, {"id": 2, "label": "b", SOURCE_FIELD: "core"}])
    assert _error_message(labels, "--gold", gold) == f"{labels}:1: field '{SOURCE_FIELD}' is missing (other rows have it)"


@pytest.mark.parametrize("text", ["0.5,x", "", "1.5", "0.5,,0.9"])
def test_bad_thresholds_are_a_usage_error(scored: tuple[Path, Path], text: str) -> None:
    labels, gold = scored
    assert _error_message(labels, "--gold", gold, "--thresholds", text).startswith("--thresholds: ")


def test_source_field_is_the_one_icm_label_writes() -> None:
    assert SOURCE_FIELD == label_command.SOURCE_FIELD


# --------------------------------------------------------------------------------------------
# bad input


def test_no_ids_in_common(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl", [{"id": 1, "label": 1}])
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 2, "label": 1}])
    message = _error_message(labels, "--gold", gold)
    assert message == f"no ids in common between {labels} and {gold} (id field 'id')"


def test_missing_file_through_cli(tmp_path: Path, files: tuple[Path, Path]) -> None:
    labels, _ = files
    missing = tmp_path / "nope.jsonl"
    assert _error_message(labels, "--gold", missing) == f"{missing}: file not found"


# Messages from the shared loader (data.load_rows) are checked for location and gist only;
# the field-level ones are this module's and are checked exactly.
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": 1, "label": 1}\n\n{"id": 2, "label": }\n', ["{path}:3: ", "invalid JSON"]),
        (b'{"id": 1, "label": 1}\n[1, 2]\n', ["{path}:2: ", "object"]),
        (b'{"id": 1, "label": "caf\xc3\xa9"}\n{"id": 2, "label": "\xff"}\n', ["{path}:2: ", "not UTF-8", "0xff"]),
        (b"\n  \n", ["{path}: "]),
        (b'{"id": 1, "label": 1}\n{"id": 2}\n', "{path}:2: field 'label' is missing"),
        (b'{"label": 1}\n', "{path}:1: field 'id' is missing"),
        (b'{"id": null, "label": 1}\n', "{path}:1: field 'id' must be a string or integer, not null"),
        (b'{"id": 1.5, "label": 1}\n', "{path}:1: field 'id' must be a string or integer, not number"),
        (b'{"id": true, "label": 1}\n', "{path}:1: field 'id' must be a string or integer, not boolean"),
        (b'{"id": 1, "label": null}\n', "{path}:1: field 'label': null is not a label"),
        (b'{"id": 1, "label": " "}\n', "{path}:1: field 'label': an empty string is not a label"),
        (b'{"id": 17, "label": 1}\n{"id": 2, "label": 1}\n{"id": "17", "label": 0}\n', "{path}:3: duplicate id '17' (first on line 1)"),
    ],
)
def test_bad_input_messages(tmp_path: Path, content: bytes, expected: str | list[str]) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_labels(str(path), "id", "label")
    message = info.value.message
    if isinstance(expected, str):
        assert message == expected.format(path=path)
    else:
        assert message.startswith(expected[0].format(path=path))
        assert all(part in message for part in expected[1:])
    assert "\n" not in message


def test_integer_valued_float_ids_match_integer_ids(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "gold.jsonl", [{"id": 3.0, "label": "a"}, {"id": 4, "label": "b"}])
    assert load_labels(str(path), "id", "label").labels == {"3": "a", "4": "b"}


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    with pytest.raises(InputError, match=r"x\.jsonl: file not found$"):
        load_labels(str(path), "id", "label")


def test_load_labels_tolerates_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": 1, "label": "Yes"}\r\n\r\n{"id": "b", "label": "1"}\r\n')
    assert load_labels(str(path), "id", "label").labels == {"1": "yes", "b": "true"}


def test_line_separator_inside_string_is_not_a_line_break(tmp_path: Path) -> None:
    path = tmp_path / "gold.jsonl"
    path.write_text('{"id": 1, "label": "a\u2028b"}\n{"id": 2, "label": "c"}\n', encoding="utf-8")
    assert load_labels(str(path), "id", "label").labels == {"1": "a\u2028b", "2": "c"}
