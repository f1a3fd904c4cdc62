"""CSV and Parquet inputs load through `datasets` into the same rows as JSONL."""

from __future__ import annotations

import json

import pytest

from icm_cli.data import load_rows
from icm_cli.errors import InputError

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
