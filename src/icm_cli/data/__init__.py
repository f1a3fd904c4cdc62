"""Floor 2 (data): rows in and out, and the files a run keeps.

Rows in as a stream, opened by `sources` (the `Source` interface: `source_base`; JSONL and stdin:
`jsonl_source`; CSV, Parquet and datasets: `arrow_source`); the checking pass that keeps a few
bytes a row (`row_index`); small files read whole (`tables`); the one reader of ids and labels
(`labels_io`); labels people gave, from Label Studio, Argilla or any labelled file
(`corrections`), matched to a run's rows for `label --fixed` (`human_labels`); rows out into a
temporary file renamed at the end (`output`, with `atomic_files` and `json_out`); the lock on
OUT (`run_lock`).

May import: foundation.
"""
