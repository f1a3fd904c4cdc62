"""CSV and Parquet inputs load through `datasets` into the same rows as JSONL."""

from __future__ import annotations

import json

import pytest

from icm_cli.data.tables import load_rows
from icm_cli.foundation.errors import InputError

ROWS = [{"id": "a", "text": "great flight"}, {"id": "b", "text": "lost my bag, again"}]


def test_jsonl_csv_and_parquet_give_the_same_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    csv = tmp_path / "x.csv"
    csv.write_text("id,text\na,great flight\nb,\"lost my bag, again\"\n")
    parquet = tmp_path / "x.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(parquet))
    for path in (jsonl, csv, parquet):
        loaded = load_rows(str(path))
        assert [r.fields for r in loaded.rows] == ROWS, path.suffix
    # CSV rows are numbered as lines of the file (the header is line 1).
    assert [r.line for r in load_rows(str(csv)).rows] == [2, 3]


def test_broken_parquet_is_a_one_line_input_error(tmp_path):
    bad = tmp_path / "x.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="x.parquet: cannot read PARQUET"):
        load_rows(str(bad))


# --------------------------------------------------------------------------------------------
# CSV cells stay text


def test_csv_cells_stay_text(tmp_path):
    """`007` is an id, not 7; `NA`, `null` and `true` are words; an empty cell is empty text."""
    csv = tmp_path / "x.csv"
    csv.write_text("id,text,score\n007,NA,1.50\n008,,true\n9,null,N/A\n")
    rows = [r.fields for r in load_rows(str(csv)).rows]
    assert rows == [
        {"id": "007", "text": "NA", "score": "1.50"},
        {"id": "008", "text": "", "score": "true"},
        {"id": "9", "text": "null", "score": "N/A"},
    ]


def test_csv_ids_join_with_gold_as_written(tmp_path):
    """The id field read from CSV matches a gold file's string ids exactly (no 7 for '007')."""
    from icm_cli.data.tables import row_ids

    csv = tmp_path / "x.csv"
    csv.write_text("id,text\n007,a\n0.10,b\n")
    assert row_ids(load_rows(str(csv)), "id") == ["007", "0.10"]


# --------------------------------------------------------------------------------------------
# output formats by the extension of -o

OUT_ROWS = [
    {"id": "007", "text": "great, \"really\"\nday", "n": 3, "tags": ["a", "b"], "label": "positive",
     "confidence": 0.91, "icm_source": "core"},
    {"id": 8, "text": "awful", "n": None, "tags": [], "label": "negative", "confidence": 0.6,
     "icm_source": "transfer"},
]


@pytest.mark.parametrize("name, fmt", [("x.jsonl", "jsonl"), ("x.json", "jsonl"), ("x.ndjson", "jsonl"),
                                       ("X.CSV", "csv"), ("x.parquet", "parquet"), ("x.pq", "parquet")])
def test_output_format_follows_the_extension(name, fmt):
    from pathlib import Path

    from icm_cli.data.output import output_format

    assert output_format(Path(name)) == fmt


@pytest.mark.parametrize("name", ["x.txt", "x.tsv", "labels", "x.jsonl.gz"])
def test_unknown_output_extension_is_refused(name):
    from pathlib import Path

    from icm_cli.data.output import output_format

    with pytest.raises(InputError, match=r"\.jsonl, \.json, \.csv or \.parquet"):
        output_format(Path(name))


def test_jsonl_output_round_trips(tmp_path):
    from icm_cli.data.output import write_rows

    out = tmp_path / "x.json"
    write_rows(OUT_ROWS, out)
    assert [json.loads(line) for line in out.read_text().splitlines()] == OUT_ROWS


def test_csv_output_is_csv_with_every_field(tmp_path):
    import csv as csvlib

    from icm_cli.data.output import write_rows

    out = tmp_path / "x.csv"
    write_rows(OUT_ROWS, out)
    with open(out, newline="", encoding="utf-8") as f:
        got = list(csvlib.DictReader(f))
    assert list(got[0]) == ["id", "text", "n", "tags", "label", "confidence", "icm_source"]
    assert got[0] == {"id": "007", "text": "great, \"really\"\nday", "n": "3", "tags": '["a", "b"]',
                      "label": "positive", "confidence": "0.91", "icm_source": "core"}
    assert got[1] == {"id": "8", "text": "awful", "n": "", "tags": "[]", "label": "negative",
                      "confidence": "0.6", "icm_source": "transfer"}
    # And it reads back through icm's own loader as the same text.
    assert [r.fields["id"] for r in load_rows(str(out)).rows] == ["007", "8"]


def test_parquet_output_is_typed_where_the_column_allows(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from icm_cli.data.output import write_rows

    out = tmp_path / "x.parquet"
    write_rows(OUT_ROWS, out)
    table = pq.read_table(out)
    assert table.column_names == ["id", "text", "n", "tags", "label", "confidence", "icm_source"]
    got = table.to_pylist()
    assert [r["icm_source"] for r in got] == ["core", "transfer"]
    assert [r["confidence"] for r in got] == [0.91, 0.6]
    assert [r["n"] for r in got] == [3, None]
    # A column Arrow cannot type (a word here, a number there; lists) is kept as JSON text,
    # rather than losing a finished run's labels at the last step.
    assert [r["id"] for r in got] == ["007", "8"]
    assert [r["tags"] for r in got] == ['["a", "b"]', "[]"]


def test_a_failed_write_leaves_no_file_and_no_temp(tmp_path, monkeypatch):
    from icm_cli.data import output

    def broken(self):
        self._file.write(b"PAR1 half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(output.RowWriter, "_flush_parquet", broken)
    out = tmp_path / "x.parquet"
    with pytest.raises(RuntimeError):
        output.write_rows(OUT_ROWS, out)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# `icm label` end to end with a fake backend: the format follows -o, icm_source in every one

FAKE_YAML = """\
task:
  template: "Tweet: {text}\\nSentiment:"
  labels: [positive, negative]
  id_field: id
search:
  initial_labels: 2
  iterations: 10
core:
  max_tokens: 64
transfer:
  chunk_size: 4
"""


def _tweets(n: int) -> list[dict]:
    from fakes import BAD, GOOD

    good, bad = sorted(GOOD), sorted(BAD)
    return [{"id": f"{k:03d}", "text": f"tweet {k} was {(good if k % 3 else bad)[k % 5]} today"} for k in range(n)]


@pytest.fixture
def word_tokens(monkeypatch):
    """Dry runs count words instead of loading the embedded tokenizer (about 20 s each)."""
    from icm_cli.backends import tokens

    monkeypatch.setattr(tokens, "token_counter", lambda config: (lambda text: len(text.split()), "words"))


@pytest.fixture
def fake_model(monkeypatch):
    from fakes import SentimentBackend

    from icm_cli.backends import loading

    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: SentimentBackend())


def _label(tmp_path, *args: str):
    from typer.testing import CliRunner

    from icm_cli.cli import app

    (tmp_path / "fake.yaml").write_text(FAKE_YAML)
    return CliRunner().invoke(app, ["label", *args, "-c", str(tmp_path / "fake.yaml"), "-q"])


def test_label_writes_the_format_its_out_names(tmp_path, fake_model):
    import csv as csvlib

    pq = pytest.importorskip("pyarrow.parquet")
    rows = _tweets(24)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = {}
    for name in ("out.jsonl", "out.csv", "out.parquet"):
        result = _label(tmp_path, str(data), "-o", str(tmp_path / name))
        assert result.exit_code == 0, result.output
        assert (tmp_path / (name + ".summary.json")).exists()
        assert not (tmp_path / (name + ".checkpoint.json")).exists()
    got["jsonl"] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    with open(tmp_path / "out.csv", newline="") as f:
        got["csv"] = list(csvlib.DictReader(f))
    got["parquet"] = pq.read_table(tmp_path / "out.parquet").to_pylist()
    for fmt, out in got.items():
        assert [r["id"] for r in out] == [r["id"] for r in rows], fmt
        assert {r["icm_source"] for r in out} == {"core", "transfer"}, fmt
        assert [r["label"] for r in out] == [r["label"] for r in got["jsonl"]], fmt
    assert [float(r["confidence"]) for r in got["csv"]] == [r["confidence"] for r in got["jsonl"]]
    assert [r["confidence"] for r in got["parquet"]] == [r["confidence"] for r in got["jsonl"]]


def test_label_with_unknown_out_extension_fails_before_the_model(tmp_path, monkeypatch):
    from icm_cli.backends import loading

    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _tweets(4)))
    result = _label(tmp_path, str(data), "-o", str(tmp_path / "out.txt"))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"icm: error: {tmp_path / 'out.txt'}: extension '.txt' names no output "
                                          f"format; end -o with .jsonl, .json, .csv or .parquet"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.yaml", "in.jsonl"]


# --------------------------------------------------------------------------------------------
# Hugging Face datasets: a save_to_disk directory, a repository layout, hf://


def test_save_to_disk_directory_loads_with_row_numbers(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(saved))
    loaded = load_rows(str(saved))
    assert [r.fields for r in loaded.rows] == ROWS
    assert [r.line for r in loaded.rows] == [1, 2]
    assert loaded.at(loaded.rows[1]) == f"{saved}: row 2"


def test_saved_dataset_dict_needs_a_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS),
                          "test": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(str(saved))
    with pytest.raises(InputError, match=r"several splits \(train, test\); choose one with --split"):
        load_rows(str(saved))
    assert [r.fields for r in load_rows(str(saved), split="test").rows] == ROWS[:1]
    with pytest.raises(InputError, match=r"no split 'dev' \(it has train, test\)"):
        load_rows(str(saved), split="dev")


def test_repository_layout_directory_loads_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    datasets.Dataset.from_list(ROWS).to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(ROWS[::-1]).to_parquet(str(repo / "data" / "test-00000-of-00001.parquet"))
    assert [r.fields for r in load_rows(str(repo)).rows] == ROWS  # train by default
    assert [r.fields for r in load_rows(str(repo), split="test").rows] == ROWS[::-1]
    with pytest.raises(InputError, match="dev"):
        load_rows(str(repo), split="dev")

    jsonl_repo = tmp_path / "jsonl_repo"
    jsonl_repo.mkdir()
    (jsonl_repo / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    loaded = load_rows(str(jsonl_repo))
    assert [r.fields for r in loaded.rows] == ROWS and loaded.numbering == "row"


def test_hf_uri_goes_to_load_dataset_with_the_split(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split))
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_rows("hf://org/name")
    assert loaded.source == "hf://org/name" and [r.fields for r in loaded.rows] == ROWS
    load_rows("hf://org/name", split="test")
    assert calls == [("org/name", "train"), ("org/name", "test")]


def test_unreachable_hub_is_a_one_line_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    with pytest.raises(InputError) as info:
        load_rows("hf://icm-test-org/no-such-dataset-here")
    assert info.value.message.startswith("hf://icm-test-org/no-such-dataset-here: cannot load the dataset (")
    assert "\n" not in info.value.message


def test_split_is_refused_for_a_plain_file(tmp_path):
    data = tmp_path / "x.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(InputError, match="--split test"):
        load_rows(str(data), split="test")


def test_dataset_digest_covers_the_content(tmp_path):
    datasets = pytest.importorskip("datasets")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(a))
    datasets.Dataset.from_list(ROWS).save_to_disk(str(b))
    changed = [ROWS[0], {**ROWS[1], "text": "lost my bag, again!"}]
    datasets.Dataset.from_list(changed).save_to_disk(str(c))
    assert load_rows(str(a)).digest == load_rows(str(b)).digest  # same rows, other files
    assert load_rows(str(a)).digest != load_rows(str(c)).digest


def test_bad_row_in_a_dataset_is_named_by_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    from typer.testing import CliRunner

    from icm_cli.cli import app

    saved = tmp_path / "saved"
    datasets.Dataset.from_list([{"id": "a", "text": "fine"}, {"id": "b", "text": None}]).save_to_disk(str(saved))
    (tmp_path / "c.yaml").write_text(FAKE_YAML)
    result = CliRunner().invoke(app, ["label", str(saved), "-c", str(tmp_path / "c.yaml"), "--dry-run"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"icm: error: {saved}: row 2: field 'text' (used by the template) "
                                          f"must be a string, got null"]


def test_label_dry_run_reads_a_saved_dataset_dict_split(tmp_path, monkeypatch, word_tokens):
    datasets = pytest.importorskip("datasets")
    from typer.testing import CliRunner

    from icm_cli.backends import loading
    from icm_cli.cli import app

    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    saved = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(_tweets(12)),
                          "test": datasets.Dataset.from_list(_tweets(5))}).save_to_disk(str(saved))
    (tmp_path / "c.yaml").write_text(FAKE_YAML)
    args = ["label", str(saved), "-c", str(tmp_path / "c.yaml"), "--dry-run"]
    missing = CliRunner().invoke(app, args)
    assert missing.exit_code == 2 and "--split" in missing.stderr
    result = CliRunner().invoke(app, args + ["--split", "test"])
    assert result.exit_code == 0, result.output
    assert "5 rows -> 5 examples" in result.stdout


# --------------------------------------------------------------------------------------------
# --limit and --sample


def _numbered(n: int):
    from icm_cli.data.sources import MemorySource

    return MemorySource("d.jsonl", [{"id": k} for k in range(n)])


class _Any:
    """The index's row check, for rows that only need an id."""

    fields = ()

    def __call__(self, source, row):
        return None


def _select(n: int, **selection):
    from icm_cli.data.row_index import Selection, build_index

    index = build_index(_numbered(n), Selection(**selection), _Any(), "id")
    return index, [row.fields["id"] for _, row in index.stream()]


def test_limit_takes_the_first_rows_and_names_the_selection():
    first, ids = _select(10, limit=3)
    assert ids == [0, 1, 2]
    full, _ = _select(10)
    assert len({full.digest, first.digest, _select(10, limit=4)[0].digest}) == 3
    assert _select(10, limit=50)[1] == list(range(10))


def test_limit_reads_only_the_rows_it_takes(tmp_path):
    """--limit stops reading: a broken line after the first N rows is never reached."""
    from icm_cli.data.row_index import Selection, build_index
    from icm_cli.data.sources import open_source

    data = tmp_path / "d.jsonl"
    data.write_text('{"id": 1}\n{"id": 2}\nnot json at all\n')
    index = build_index(open_source(str(data)), Selection(limit=2), _Any(), "id")
    assert index.count == 2
    with pytest.raises(InputError, match="d.jsonl:3"):
        build_index(open_source(str(data)), Selection(limit=3), _Any(), "id")


def test_sample_is_seeded_uniform_and_in_input_order():
    a, ids = _select(40, sample=10, seed=1)
    assert len(ids) == 10 and ids == sorted(ids) and len(set(ids)) == 10
    assert _select(40, sample=10, seed=1)[1] == ids  # the seed fixes the sample
    other, other_ids = _select(40, sample=10, seed=2)
    assert other_ids != ids and other.digest != a.digest
    assert _select(40, limit=10)[0].digest != a.digest
    # Uniform: over many seeds every row is drawn about 10/40 of the time (binomial bounds).
    from icm_cli.data.row_index import reservoir

    counts = [0] * 40
    rows = list(_numbered(40).rows())
    for seed in range(2000):
        for position, _ in reservoir(iter(rows), 10, seed):
            counts[position] += 1
    assert all(400 < c < 600 for c in counts), counts  # mean 500, sd ~19


def test_limit_and_sample_together_are_refused():
    from icm_cli.data.row_index import Selection

    with pytest.raises(InputError, match="--limit and --sample"):
        Selection(limit=2, sample=2)


def test_dry_run_with_limit_and_sample(tmp_path, monkeypatch, word_tokens):
    from typer.testing import CliRunner

    from icm_cli.backends import loading
    from icm_cli.cli import app

    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _tweets(30)))
    (tmp_path / "c.yaml").write_text(FAKE_YAML)
    for option in (["--limit", "7"], ["--sample", "9", "--seed", "4"]):
        result = CliRunner().invoke(app, ["label", str(data), "-c", str(tmp_path / "c.yaml"), "--dry-run", *option])
        assert result.exit_code == 0, result.output
        assert f"{option[1]} rows -> {option[1]} examples" in result.stdout


def test_a_checkpoint_of_one_selection_does_not_resume_another(tmp_path, monkeypatch):
    """The data digest a checkpoint keeps names the selection: resuming with another --sample
    is refused before any model loads; the same selection gets past that check."""
    from typer.testing import CliRunner

    from icm_cli.backends import loading
    from icm_cli.run.checkpoint import Checkpoint
    from icm_cli.cli import app
    from icm_cli.foundation.config import load_config
    from icm_cli.data.row_index import Selection, build_index
    from icm_cli.run.runner import RunState
    from icm_cli.data.sources import open_source
    from icm_cli.algorithm.tasks import TaskShape

    class Loaded(Exception):
        pass

    def loaded(*a, **k):
        raise Loaded()

    monkeypatch.setattr(loading, "load_backend", loaded)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _tweets(30)))
    (tmp_path / "c.yaml").write_text(FAKE_YAML)
    cfg = load_config(tmp_path / "c.yaml")
    digest = build_index(open_source(str(data)), Selection(sample=10, seed=0), TaskShape(cfg.task).check, "id").digest
    out = tmp_path / "out.jsonl"
    Checkpoint(out.with_name("out.jsonl.checkpoint"), cfg, digest).save(RunState())
    base = ["label", str(data), "-c", str(tmp_path / "c.yaml"), "-o", str(out), "--resume", "-q"]
    other = CliRunner().invoke(app, base + ["--sample", "11"])
    assert other.exit_code == 2 and "input data changed" in other.stderr
    same = CliRunner().invoke(app, base + ["--sample", "10"])
    assert isinstance(same.exception, Loaded), same.output


# --------------------------------------------------------------------------------------------
# progress bars: none from `datasets` under -q or in a log


def test_quiet_csv_load_draws_no_progress_bar(tmp_path, capfd):
    pytest.importorskip("datasets")
    for progress in (True, False):
        csv = tmp_path / f"fresh-{progress}.csv"  # a new file: datasets generates its split
        csv.write_text("id,text\na,b\n")
        capfd.readouterr()
        load_rows(str(csv), progress=progress)
        err = capfd.readouterr().err
        assert ("Generating train split" in err) == progress, err


def test_label_q_on_a_new_csv_prints_nothing_on_stderr(tmp_path, monkeypatch):
    import subprocess
    import sys

    csv = tmp_path / "fresh.csv"
    csv.write_text("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in _tweets(6)))
    # An openai backend: the dry run then estimates tokens without loading a tokenizer.
    (tmp_path / "c.yaml").write_text(FAKE_YAML + "backend:\n  type: openai\n  base_urls: [http://127.0.0.1:9/v1]\n")
    proc = subprocess.run([sys.executable, "-m", "icm_cli.cli", "label", str(csv), "-c", str(tmp_path / "c.yaml"),
                           "--dry-run", "-q", "--limit", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_gguf_conversion_bar_only_when_asked(capfd):
    pytest.importorskip("transformers")
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from icm_cli.backends.embedded import gguf_progress as _gguf_progress

    original = gguf_utils.tqdm
    for show in (True, False):
        capfd.readouterr()
        with _gguf_progress(show):
            for _ in gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."):
                pass
        err = capfd.readouterr().err
        assert ("de-quantizing" in err) == show, err
    assert gguf_utils.tqdm is original
