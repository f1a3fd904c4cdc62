"""A labelled run for the report's tests without the model: the real runner over the keyword
backend (fakes.SentimentBackend), its rows and summary written as `icm label` writes them, and a
gold file that disagrees with the keywords on some rows."""

from __future__ import annotations

import json
import random
from pathlib import Path

from icm_cli.foundation.config import CheckConfig, Config, CoreConfig, SearchConfig, TaskConfig, TransferConfig
from icm_cli.data.output import summary_text
from icm_cli.data.row_index import Selection, build_index
from icm_cli.run.runner import RunHooks, RunInput, label_dataset
from icm_cli.data.sources import MemorySource
from icm_cli.algorithm.tasks import SOURCE_FIELD, TaskShape

from fakes import BAD, GOOD, SentimentBackend

TASK = TaskConfig(template="Tweet: {text}\nSentiment:", labels=("positive", "negative"), id_field="id")
FILLER = ("the flight", "my bag", "this airline", "the crew", "our seats", "the app", "a delay", "the lounge")


def tweet_rows(n: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Rows with one to three sentiment words (or none), and gold that follows the words on most rows."""
    rng = random.Random(seed)
    rows, gold = [], []
    for k in range(n):
        words = rng.sample(sorted(GOOD | BAD), rng.choice((0, 1, 1, 2, 3)))
        text = f"{rng.choice(FILLER)} was {' and '.join(words) or 'there'} <b>&amp; today</b> #{k}"
        lean = len(set(words) & GOOD) - len(set(words) & BAD)
        truth = "positive" if lean > 0 or (lean == 0 and rng.random() < 0.5) else "negative"
        if rng.random() < 0.08:
            truth = "negative" if truth == "positive" else "positive"
        rows.append({"id": f"t{k:04d}", "text": text})
        gold.append({"id": f"t{k:04d}", "label": truth})
    return rows, gold


def fake_run(directory: Path, n: int = 160, seed: int = 0, check: bool = True) -> tuple[Path, Path]:
    """(labels file, gold file) in `directory`; the summary beside the labels."""
    rows, gold = tweet_rows(n, seed)
    config = Config(task=TASK, search=SearchConfig(initial_labels=2, iterations=40, seed=1),
                    core=CoreConfig(max_tokens=120), transfer=TransferConfig(chunk_size=16, zero_shot="auto"),
                    check=CheckConfig(signal=check))
    write_run(directory, rows, config, SentimentBackend())
    gold_path = directory / "gold.jsonl"
    gold_path.write_text("".join(json.dumps(g) + "\n" for g in gold), encoding="utf-8")
    return directory / "labels.jsonl", gold_path


def write_run(directory: Path, rows: list[dict], config: Config, backend: SentimentBackend) -> Path:
    """The runner over `rows`, its labels and summary written as `icm label` writes them."""
    shape = TaskShape(config.task)
    run_input = RunInput(build_index(MemorySource("rows.jsonl", rows), Selection(), shape.check,
                                     config.task.id_field), shape)
    out: list[dict] = []

    def write(batch):
        for _, fields, r in batch:
            out.append({**fields, "label": r.label, "confidence": round(r.confidence, 6), SOURCE_FIELD: r.source})

    summary = label_dataset(run_input, config, backend, RunHooks(on_rows=write))
    labels = directory / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in out), encoding="utf-8")
    (directory / "labels.jsonl.summary.json").write_text(summary_text(summary.to_json()), encoding="utf-8")
    return labels
