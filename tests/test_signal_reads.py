"""The signal check asks the model for nothing the run read already: a transferred row's zero-shot
score (the transfer's last context, where the labels average zero-shot in) is the check's
zero-shot reading's raw score too, the same prompt and the same numbers."""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from icm_cli.algorithm.tasks import TaskShape
from icm_cli.data.row_index import Selection, build_index
from icm_cli.data.sources import MemorySource
from icm_cli.foundation.config import CheckConfig, Config, CoreConfig, SearchConfig, TransferConfig
from icm_cli.run.runner import RunHooks, RunInput, label_dataset

from fakes import SentimentBackend
from report_fixtures import TASK as TWEETS, tweet_rows
from test_signal_comparisons import TASK as PAIRS, Reader, pairs


@contextmanager
def counted(backend: Any) -> Iterator[Counter]:
    """The backend's zero-shot prompts (one segment), each counted every time it is read."""
    seen: Counter = Counter()
    score = backend.score

    def counting(requests):
        seen.update(r.segments[0] for r in requests if len(r.segments) == 1)
        return score(requests)

    backend.score = counting
    try:
        yield seen
    finally:
        backend.score = score


@pytest.mark.parametrize("task, rows, backend", [
    (TWEETS, tweet_rows(400)[0], SentimentBackend),  # centred on the batch
    (PAIRS, pairs(200), lambda: Reader(compares=1.5, query=0.0)),  # not centred, both orders read
], ids=["classification", "comparison"])
def test_the_check_reads_no_zero_shot_prompt_the_run_read(task, rows, backend):
    shape = TaskShape(task)

    def run(signal: bool):
        data = RunInput(build_index(MemorySource("rows.jsonl", rows), Selection(), shape.check, task.id_field), shape)
        config = Config(task=task, search=SearchConfig(initial_labels=2, iterations=20, seed=1),
                        core=CoreConfig(max_tokens=200, count=1),
                        transfer=TransferConfig(chunk_size=16, zero_shot="on"), check=CheckConfig(signal=signal))
        model = backend()
        with counted(model) as seen:
            return label_dataset(data, config, model, RunHooks()), seen

    summary, checked = run(True)
    assert summary.signal is not None and summary.readings is not None
    assert len(summary.readings["rows"]) >= 16
    _, unchecked = run(False)
    by_check = [p for p, n in checked.items() if n > unchecked[p]]
    assert by_check, "the check read no zero-shot prompt (its shuffled rows at least)"
    again = [p for p in by_check if unchecked[p]]
    assert not again, f"the check read {len(again)} zero-shot prompts the run read, e.g. {again[0]!r}"


@pytest.mark.parametrize("init", ["random", "zero_shot"])
@pytest.mark.parametrize("count", [1, 2])
@pytest.mark.parametrize("task, rows, backend", [
    (TWEETS, tweet_rows(400)[0], SentimentBackend),
    (PAIRS, pairs(200), lambda: Reader(compares=1.5, query=0.0)),
], ids=["classification", "comparison"])
def test_a_run_reads_no_zero_shot_prompt_twice(task, rows, backend, count, init):
    """`transfer.zero_shot: on` with a short search, so a core leaves examples unlabelled for the
    transfer. Old code read 5 to 11 classification prompts twice (the cores' unlabelled examples:
    once for the core's labels, again when transferred) and, on comparisons, 178 (the zero-shot
    rule's sample, whose readings the transfer dropped where no calibration had kept the rows).
    `search.init: zero_shot` (the shipped configs') read every core example once more, to start."""
    shape = TaskShape(task)
    data = RunInput(build_index(MemorySource("rows.jsonl", rows), Selection(), shape.check, task.id_field), shape)
    config = Config(task=task, search=SearchConfig(initial_labels=2, iterations=20, seed=1, init=init),
                    core=CoreConfig(max_tokens=200, count=count),
                    transfer=TransferConfig(chunk_size=16, zero_shot="on"), check=CheckConfig(signal=False))
    model = backend()
    out: list = []
    with counted(model) as seen:
        summary = label_dataset(data, config, model, RunHooks(on_rows=out.extend))
    assert summary.zero_shot_averaged and summary.cores == count and len(out) == len(rows)
    assert summary.core_rows > 0 and summary.transfer_rows > 0
    assert len(seen) == shape.per_row * len(rows)
    again = [p for p, n in seen.items() if n > 1]
    assert not again, f"{len(again)} zero-shot prompts read twice, e.g. {again[0]!r}"


@pytest.mark.parametrize("task, rows, backend, count, zero_shot, tokens", [
    # core.count auto reads a sample zero-shot to decide on a second core (old code: 30 read again)
    (TWEETS, tweet_rows(400)[0], SentimentBackend, "auto", "off", 200),
    (PAIRS, pairs(200), lambda: Reader(compares=1.5, query=0.0), "auto", "off", 200),  # old: 178
    # a run that is nearly all core: the check reads the core (read_core), whose rows the zero-shot
    # rule read (old: 24 and 50)
    (TWEETS, tweet_rows(40)[0], SentimentBackend, 1, "on", 4000),
    (PAIRS, pairs(40), lambda: Reader(compares=1.5, query=0.0), 1, "on", 4000),
], ids=["classification-auto", "comparison-auto", "classification-core", "comparison-core"])
def test_the_check_reads_no_zero_shot_prompt_twice(task, rows, backend, count, zero_shot, tokens):
    shape = TaskShape(task)
    data = RunInput(build_index(MemorySource("rows.jsonl", rows), Selection(), shape.check, task.id_field), shape)
    config = Config(task=task, search=SearchConfig(initial_labels=2, iterations=60, seed=1),
                    core=CoreConfig(max_tokens=tokens, count=count),
                    transfer=TransferConfig(chunk_size=16, zero_shot=zero_shot), check=CheckConfig(signal=True))
    model = backend()
    with counted(model) as seen:
        summary = label_dataset(data, config, model, RunHooks())
    assert summary.signal is not None and summary.signal["verdict"] != "unchecked"
    assert summary.readings is not None and summary.readings["zero_shot"]
    again = [p for p, n in seen.items() if n > 1]
    assert not again, f"{len(again)} zero-shot prompts read twice, e.g. {again[0]!r}"


@pytest.mark.model
@pytest.mark.slow  # two runs of about 40 s each on 2 cores: make test-slow (CI runs it after make test)
def test_the_real_model_on_comparisons_decides_on_rows_and_reads_nothing_twice():
    """The embedded model on 48 tweet pairs (the shipped tweets, two a row), `core.count` and
    `transfer.zero_shot` auto: the decisions are measured on rows, both orders of each, and the
    check asks for no zero-shot prompt the run read (it read each sampled row's other order again)."""
    import dataclasses
    import json
    from pathlib import Path

    from icm_cli.backends.loading import load_backend
    from icm_cli.foundation.config import TaskConfig, load_config
    from icm_cli.foundation.overrides import parse_set

    root = Path(__file__).resolve().parents[1]
    lines = (root / "examples" / "tweets-1000.jsonl").read_text(encoding="utf-8").split("\n")[:96]
    tweets = [json.loads(line)["text"] for line in lines]
    rows = [{"id": f"p{k}", "a": tweets[2 * k], "b": tweets[2 * k + 1]} for k in range(48)]
    sets = ["search.iterations=4", "core.max_tokens=200", "core.count=auto", "transfer.zero_shot=auto"]
    base = load_config(root / "configs" / "tweets-sentiment.yaml", [parse_set(s) for s in sets])
    task = TaskConfig(type="comparison", labels=("True", "False"), id_field="id", pair_fields=("a", "b"),
                      template="Tweet 1: {a}\nTweet 2: {b}\nClaim: Tweet 1 is more negative than Tweet 2.\n"
                               "I think this claim is")
    shape = TaskShape(task)
    backend = load_backend(base.backend)
    try:
        def run(signal: bool):
            config = dataclasses.replace(base, task=task, check=CheckConfig(signal=signal))
            data = RunInput(build_index(MemorySource("pairs.jsonl", rows), Selection(), shape.check, task.id_field), shape)
            out: list = []
            with counted(backend) as seen:
                return label_dataset(data, config, backend, RunHooks(on_rows=out.extend)), seen, out

        summary, checked, labelled = run(True)
        _, unchecked, _ = run(False)
    finally:
        backend.close()
    assert len(labelled) == 48 and {r.label for _, _, r in labelled} <= {"True", "False"}
    assert summary.core_kappa is not None and summary.core_choice
    assert summary.zero_shot_rule and "rows (both orders of each)" in summary.zero_shot_rule
    sample = summary.readings
    assert sample is not None and sample["both_orders"] and not sample["centred"]
    assert set(sample["examples"]) == {0} and len(sample["rows"]) == len(set(sample["rows"])) >= 16
    again = [p for p, n in checked.items() if n > unchecked[p] and unchecked[p]]
    assert not again, f"the check read {len(again)} zero-shot prompts the run read, e.g. {again[0]!r}"
