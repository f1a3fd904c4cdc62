"""`icm export`: labels files of each task type become rows TRL / transformers read as-is.

Labelled files are built here in the shape `icm label` writes (input fields + label, confidence,
icm_source) for the shipped configs; outputs are read back with `datasets` as a trainer would.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from icm_cli.run import export
from icm_cli.commands import label as label_command
from icm_cli.cli import app
from icm_cli.foundation.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
runner = CliRunner()
CACHE = ""


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _labelled(row: dict, label: str, confidence: float, source: str) -> dict:
    return {**row, "label": label, "confidence": confidence, "icm_source": source}


def _tweets(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows = [json.loads(x) for x in (ROOT / "examples" / "tweets-16.jsonl").read_text().split("\n") if x.strip()]
    out = [_labelled(r, "positive" if k % 3 else "negative", round(0.5 + k / 32, 4), "core" if k < 10 else "transfer")
           for k, r in enumerate(rows)]
    return _write(tmp_path / "tweets.labels.jsonl", out), out


def _gsm8k(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows = []
    for q in range(2):
        for s, (answer, label) in enumerate([("4", "True"), ("5", "False"), ("4", "True"), ("6", "False")]):
            rows.append(_labelled({"id": f"q{q}s{s}", "consistency_id": q, "question": f"What is {q} + 4?",
                                   "cot": f"Step {s}: so the answer is {answer}.", "answer": answer},
                                  label, 0.6 + 0.1 * s, "core" if q == 0 else "transfer"))
    return _write(tmp_path / "gsm8k.labels.jsonl", rows), rows


def _alpaca(tmp_path: Path) -> tuple[Path, list[dict]]:
    rows = [_labelled({"id": f"p{k}", "question": f"Write a haiku about {topic}.",
                       "choice": f"A careful haiku about {topic}.", "choice_2": f"no. {topic}"},
                      "True" if k % 2 == 0 else "False", 0.7 + 0.05 * k, "core")
            for k, topic in enumerate(["rain", "snow", "wind", "sun"])]
    return _write(tmp_path / "alpaca.labels.jsonl", rows), rows


def _lines(text: str) -> list[dict]:
    # split("\n"), not splitlines(): tweets hold characters splitlines() breaks on (e.g. U+0085).
    return [json.loads(x) for x in text.split("\n") if x]


def _run(*args: str):
    return runner.invoke(app, ["export", *map(str, args)])


@pytest.fixture(autouse=True, scope="module")
def _datasets_cache(tmp_path_factory):
    global CACHE
    CACHE = str(tmp_path_factory.mktemp("hf-datasets-cache"))  # keep test reads out of ~/.cache


def _load_json(path: Path) -> datasets.Dataset:
    return datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=CACHE)


def test_preference_rows_are_trl_standard_preference(tmp_path):
    labels, rows = _alpaca(tmp_path)
    out = tmp_path / "pref.jsonl"
    result = _run(labels, "-c", CONFIGS / "alpaca-comparison.yaml", "--format", "preference", "-o", out)
    assert result.exit_code == 0, result.output
    ds = _load_json(out)
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert ds.features["chosen"] == datasets.Value("string")
    for got, row in zip(ds, rows):
        better, worse = (row["choice"], row["choice_2"]) if row["label"] == "True" else (row["choice_2"], row["choice"])
        assert got == {"prompt": row["question"], "chosen": "\n" + better, "rejected": "\n" + worse}
    assert "4 rows in, 4 kept (dropped: 0 contradictory pairs); preference rows to" in result.stderr


def test_preference_chat_rows_are_conversational_messages(tmp_path):
    labels, rows = _alpaca(tmp_path)
    out = tmp_path / "chat.jsonl"
    result = _run(labels, "-c", CONFIGS / "alpaca-comparison.yaml", "--format", "preference", "--chat", "-o", out)
    assert result.exit_code == 0, result.output
    ds = _load_json(out)
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    first = ds[1]  # labelled False: choice_2 is the better answer
    assert first["prompt"] == [{"role": "user", "content": rows[1]["question"]}]
    assert first["chosen"] == [{"role": "assistant", "content": rows[1]["choice_2"]}]
    assert first["rejected"] == [{"role": "assistant", "content": rows[1]["choice"]}]


def test_pairs_of_one_group_judged_both_ways_are_dropped_and_the_rest_kept(tmp_path):
    def pair(k, a, b, label):
        return _labelled({"id": f"t{k}", "consistency_id": 7, "question": "Is the earth flat?",
                          "choice": a, "choice_2": b}, label, 0.9, "core")

    rows = [pair(0, "No.", "Yes.", "True"), pair(1, "Yes.", "No.", "True"),  # contradict each other
            pair(2, "No.", "Maybe.", "True"), pair(3, "Maybe.", "No.", "False"),  # agree: No. > Maybe.
            pair(4, "Same.", "Same.", "True")]  # nothing to prefer
    labels = _write(tmp_path / "tqa.jsonl", rows)
    out = tmp_path / "tqa.out.jsonl"
    result = _run(labels, "-c", CONFIGS / "truthfulqa-preference.yaml", "--format", "preference", "-o", out)
    assert result.exit_code == 0, result.output
    ds = _load_json(out)
    assert [(r["chosen"], r["rejected"]) for r in ds] == [("\nNo.", "\nMaybe."), ("\nNo.", "\nMaybe.")]
    assert "5 rows in, 2 kept (dropped: 2 contradictory pairs, 1 with identical candidates)" in result.stderr


def test_classification_jsonl_has_text_and_label_words(tmp_path):
    labels, rows = _tweets(tmp_path)
    out = tmp_path / "cls.jsonl"
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "-o", out)
    assert result.exit_code == 0, result.output
    ds = _load_json(out)
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == [r["text"] for r in rows]
    assert ds["label"] == [r["label"] for r in rows]
    assert "16 rows in, 16 kept;" in result.stderr


@pytest.mark.parametrize("spelling", ["somedir/", "somedir"])
def test_classification_directory_has_a_class_label(tmp_path, spelling):
    labels, rows = _tweets(tmp_path)
    out = tmp_path / spelling
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "-o", out)
    assert result.exit_code == 0, result.output
    ds = datasets.load_from_disk(str(tmp_path / "somedir"))
    assert ds.column_names == ["text", "label"]
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].names == ["positive", "negative"]  # the config's order: id2label
    assert [ds.features["label"].int2str(y) for y in ds["label"]] == [r["label"] for r in rows]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".somedir")]  # no temp dir left


def test_preference_directory_loads_with_the_same_columns(tmp_path):
    labels, rows = _alpaca(tmp_path)
    result = _run(labels, "-c", CONFIGS / "alpaca-comparison.yaml", "--format", "preference", "--chat",
                  "-o", tmp_path / "prefdir")
    assert result.exit_code == 0, result.output
    ds = datasets.load_from_disk(str(tmp_path / "prefdir"))
    assert ds.column_names == ["prompt", "chosen", "rejected"]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": rows[0]["choice"]}]


def test_claims_keep_only_true_claims_as_prompt_completion(tmp_path):
    labels, rows = _gsm8k(tmp_path)
    out = tmp_path / "sft.jsonl"
    result = _run(labels, "-c", CONFIGS / "gsm8k-verification.yaml", "--format", "prompt-completion", "-o", out)
    assert result.exit_code == 0, result.output
    ds = _load_json(out)
    assert ds.column_names == ["prompt", "completion"]
    true_rows = [r for r in rows if r["label"] == "True"]
    assert len(true_rows) == 4 < len(rows)
    assert ds.to_list() == [{"prompt": r["question"], "completion": "\n" + r["cot"]} for r in true_rows]
    assert "8 rows in, 4 kept (dropped: 4 claims judged false)" in result.stderr


def test_claims_chat_and_chosen_fields_and_separator(tmp_path):
    labels, rows = _gsm8k(tmp_path)
    out = tmp_path / "chat.jsonl"
    result = _run(labels, "-c", CONFIGS / "gsm8k-verification.yaml", "--format", "prompt-completion", "--chat",
                  "-o", out)
    assert result.exit_code == 0, result.output
    first = _load_json(out)[0]
    assert first == {"prompt": [{"role": "user", "content": rows[0]["question"]}],
                     "completion": [{"role": "assistant", "content": rows[0]["cot"]}]}
    args = [labels, "-c", CONFIGS / "gsm8k-verification.yaml", "--format", "prompt-completion"]
    vague = _run(*args, "--completion-field", "answer")  # outside the template: which field is the prompt?
    assert vague.exit_code == 2 and "the template uses question, cot; pass --prompt-field as well" in vague.stderr
    plain = _run(*args, "--prompt-field", "question", "--completion-field", "answer", "--separator", " The answer: ")
    assert plain.exit_code == 0, plain.output
    assert _lines(plain.stdout)[0] == {"prompt": rows[0]["question"], "completion": " The answer: 4"}


def test_no_out_writes_jsonl_to_stdout(tmp_path):
    labels, rows = _tweets(tmp_path)
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification")
    assert result.exit_code == 0, result.output
    assert _lines(result.stdout) == [{"text": r["text"], "label": r["label"]} for r in rows]
    assert "rows to stdout" in result.stderr


def test_min_confidence_keeps_rows_at_or_above_it(tmp_path):
    labels, rows = _tweets(tmp_path)
    threshold = rows[8]["confidence"]
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification",
                  "--min-confidence", threshold)
    assert result.exit_code == 0, result.output
    kept = [r["text"] for r in _lines(result.stdout)]
    assert kept == [r["text"] for r in rows if r["confidence"] >= threshold]
    assert rows[8]["text"] in kept and rows[7]["text"] not in kept  # the boundary is inclusive
    assert f"16 rows in, 8 kept (dropped: 8 under confidence {threshold:g})" in result.stderr


@pytest.mark.parametrize("source", ["core", "transfer"])
def test_source_keeps_searched_or_transferred_rows(tmp_path, source):
    labels, rows = _tweets(tmp_path)
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification",
                  "--source", source, "--min-confidence", "0.6")
    assert result.exit_code == 0, result.output
    kept = [r["text"] for r in _lines(result.stdout)]
    expected = [r["text"] for r in rows if r["icm_source"] == source and r["confidence"] >= 0.6]
    assert kept == expected and expected
    other = sum(r["icm_source"] != source for r in rows)
    assert f"(dropped: {other} not from {source}," in result.stderr


def test_csv_labels_and_renamed_fields_are_read(tmp_path):
    _, rows = _tweets(tmp_path)
    path = tmp_path / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "sentiment", "p", "icm_source"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"id": r["id"], "text": r["text"], "sentiment": r["label"], "p": r["confidence"],
                             "icm_source": r["icm_source"]})
    result = _run(path, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification",
                  "--label-field", "sentiment", "--confidence-field", "p", "--min-confidence", "0.9")
    assert result.exit_code == 0, result.output
    kept = _lines(result.stdout)
    assert kept == [{"text": r["text"], "label": r["label"]} for r in rows if r["confidence"] >= 0.9]


@pytest.mark.parametrize("config,fmt,fits", [
    ("tweets-sentiment.yaml", "preference", "classification"),
    ("tweets-sentiment.yaml", "prompt-completion", "classification"),
    ("gsm8k-verification.yaml", "classification", "prompt-completion"),
    ("alpaca-comparison.yaml", "prompt-completion", "preference"),
    ("alpaca-comparison.yaml", "classification", "preference"),
])
def test_a_format_that_does_not_fit_the_task_is_refused(tmp_path, config, fmt, fits):
    labels, _ = _tweets(tmp_path)
    out = tmp_path / "x.jsonl"
    result = _run(labels, "-c", CONFIGS / config, "--format", fmt, "-o", out)
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and f"use --format {fits}" in message
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--format", "dpo"], "must be one of preference, classification, prompt-completion"),
    (["--format", "classification", "--source", "searched"], "--source is 'searched'"),
    (["--format", "classification", "--chat"], "--chat applies to preference and prompt-completion"),
    (["--format", "classification", "--completion-field", "text"], "--completion-field does not apply"),
    (["--format", "classification", "-o", "OUT/x.json"], "-o takes a .jsonl file or a directory"),
    (["--format", "classification", "--min-confidence", "2"], "16 rows in, 0 kept"),
    (["--format", "classification", "--label-field", "nope"], "field 'nope' (the label) is missing"),
])
def test_bad_arguments_are_one_line_errors_and_write_nothing(tmp_path, args, needle):
    labels, _ = _tweets(tmp_path)
    before = set(tmp_path.iterdir())
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", *args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and needle in result.stderr
    assert result.stdout == "" and set(tmp_path.iterdir()) == before


def test_bad_rows_name_file_line_and_field(tmp_path):
    labels, rows = _tweets(tmp_path)
    rows[3]["label"] = "neutral"
    del rows[5]["icm_source"]
    _write(labels, rows)
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification")
    assert result.exit_code == 2
    assert f"{labels}:4: field 'label' is 'neutral', not one of the config's labels (positive, negative)" in result.stderr
    rows[3]["label"] = "negative"
    _write(labels, rows)
    assert _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification").exit_code == 0
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "--source", "core")
    assert result.exit_code == 2 and f"{labels}:6: field 'icm_source' is missing" in result.stderr


def test_existing_out_needs_force_which_replaces_it_whole(tmp_path):
    labels, rows = _tweets(tmp_path)
    cfg = CONFIGS / "tweets-sentiment.yaml"
    for out in (tmp_path / "o.jsonl", tmp_path / "odir"):
        assert _run(labels, "-c", cfg, "--format", "classification", "-o", out).exit_code == 0
        again = _run(labels, "-c", cfg, "--format", "classification", "-o", out, "--source", "core")
        assert again.exit_code == 2 and "--force" in again.stderr
        forced = _run(labels, "-c", cfg, "--format", "classification", "-o", out, "--source", "core", "--force")
        assert forced.exit_code == 0, forced.output
        ds = _load_json(out) if out.suffix else datasets.load_from_disk(str(out))
        assert ds.num_rows == sum(r["icm_source"] == "core" for r in rows) < len(rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl", "odir", "tweets.labels.jsonl"]


def test_export_reads_the_source_field_icm_label_writes():
    assert export.SOURCE_FIELD == label_command.SOURCE_FIELD


@pytest.mark.parametrize("value,shown", [("high", "'high'"), (1.5, "1.5"), ("1.5", "'1.5'"), (None, "null")])
def test_a_bad_confidence_reads_as_in_icm_eval(tmp_path, value, shown):
    # export and eval read confidences with one helper, so one message for one mistake
    labels, rows = _tweets(tmp_path)
    rows[2]["confidence"] = value
    _write(labels, rows)
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "--min-confidence", "0.5")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"icm: error: {labels}:3: field 'confidence' must be a number from 0 to 1, got {shown}"


# ---- --force replaces only what icm wrote


def _tree(root: Path) -> dict[str, object]:
    """Everything under root, links not followed: what a refused command must leave as it was."""
    out: dict[str, object] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_fifo():
            out[rel] = "fifo"
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


def _saved_dataset(path: Path, shards: int = 1) -> Path:
    datasets.Dataset.from_list([{"text": f"t{k}", "label": k % 2} for k in range(4)]).save_to_disk(
        str(path), num_shards=shards)
    return path


@pytest.mark.parametrize("case", ["holds-the-labels", "empty", "extra-file", "extra-directory", "hidden-file",
                                  "link-to-a-saved-dataset"])
def test_force_refuses_a_directory_icm_did_not_write(tmp_path, case):
    labels, _ = _tweets(tmp_path)
    out = tmp_path / "odir"
    if case == "holds-the-labels":  # icm export runs/a/labels.jsonl -o runs/a --force
        out.mkdir()
        labels = labels.rename(out / "labels.jsonl")
    elif case == "empty":
        out.mkdir()
    elif case == "link-to-a-saved-dataset":
        out.symlink_to(_saved_dataset(tmp_path / "elsewhere"))
    else:
        _saved_dataset(out)
        extra = out / {"extra-file": "notes.md", "extra-directory": "cache", "hidden-file": ".keep"}[case]
        extra.mkdir() if case == "extra-directory" else extra.write_text("mine\n")
    before = _tree(tmp_path)
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "-o", out, "--force")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"icm: error: {out}: ") and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == "" and _tree(tmp_path) == before


@pytest.mark.parametrize("kind", ["link-to-a-file", "dangling-link", "fifo", "directory"])
def test_force_refuses_a_jsonl_out_that_is_not_a_regular_file(tmp_path, kind):
    labels, _ = _tweets(tmp_path)
    out = tmp_path / "o.jsonl"
    if kind == "link-to-a-file":
        out.symlink_to(_write(tmp_path / "precious.jsonl", [{"mine": 1}]))
    elif kind == "dangling-link":
        out.symlink_to(tmp_path / "nowhere.jsonl")
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
        (out / "mine.txt").write_text("mine\n")
    before = _tree(tmp_path)
    for extra in ([], ["--force"]):
        result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "-o", out, *extra)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"icm: error: {out}: ") and len(result.stderr.strip().splitlines()) == 1
        assert "--force" not in result.stderr.split(";")[0]  # not "pass --force": --force would not replace it
        assert _tree(tmp_path) == before


def test_force_replaces_a_directory_save_to_disk_wrote_in_any_number_of_shards(tmp_path):
    labels, rows = _tweets(tmp_path)
    out = _saved_dataset(tmp_path / "odir", shards=2)
    result = _run(labels, "-c", CONFIGS / "tweets-sentiment.yaml", "--format", "classification", "-o", out, "--force")
    assert result.exit_code == 0, result.output
    assert datasets.load_from_disk(str(out))["text"] == [r["text"] for r in rows]


def test_saved_dataset_directory_is_recognised_by_its_entries(tmp_path):
    from icm_cli.data.output import replace_refusal

    one, two = _saved_dataset(tmp_path / "one"), _saved_dataset(tmp_path / "two", shards=3)
    assert replace_refusal(one, directory=True) is None and replace_refusal(two, directory=True) is None
    (two / "data-00001-of-00003.arrow").unlink()  # a shard missing: not as save_to_disk left it
    assert "data-00001-of-00003.arrow" in replace_refusal(two, directory=True)
    (one / "state.json").unlink()
    assert "state.json" in replace_refusal(one, directory=True)
    assert "not a directory" in replace_refusal(_write(tmp_path / "f.jsonl", []), directory=True)
    assert replace_refusal(tmp_path / "absent", directory=True) is None


def test_save_directory_itself_refuses_to_move_aside_a_directory_it_did_not_write(tmp_path):
    # save_directory is the code that deletes: it checks again rather than trust every caller
    out = tmp_path / "odir"
    out.mkdir()
    (out / "labels.jsonl").write_text("mine\n")
    result = export.Export("classification", [{"text": "t", "label": "positive"}], 1,
                           class_names=("positive", "negative"))
    with pytest.raises(InputError, match="odir"):
        export.save_directory(result, out)
    assert (out / "labels.jsonl").read_text() == "mine\n" and [p.name for p in tmp_path.iterdir()] == ["odir"]
