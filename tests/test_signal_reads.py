"""The signal check asks the model for nothing the run read already: a transferred row's zero-shot
score (the transfer's last context, where the labels average zero-shot in) is the check's
zero-shot reading's raw score too, the same prompt and the same numbers."""

from __future__ import annotations

from collections import Counter

import pytest

from icm_cli.algorithm.tasks import TaskShape
from icm_cli.data.row_index import Selection, build_index
from icm_cli.data.sources import MemorySource
from icm_cli.foundation.config import CheckConfig, Config, CoreConfig, SearchConfig, TransferConfig
from icm_cli.run.runner import RunHooks, RunInput, label_dataset

from fakes import SentimentBackend
from report_fixtures import TASK as TWEETS, tweet_rows
from test_signal_comparisons import TASK as PAIRS, Reader, pairs


def counted(backend: SentimentBackend) -> Counter:
    """The backend's zero-shot prompts (one segment), each counted every time it is read."""
    seen: Counter = Counter()
    score = backend.score

    def counting(requests):
        seen.update(r.segments[0] for r in requests if len(r.segments) == 1)
        return score(requests)

    backend.score = counting  # type: ignore[method-assign]
    return seen


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
        seen = counted(model)
        return label_dataset(data, config, model, RunHooks()), seen

    summary, checked = run(True)
    assert summary.signal is not None and summary.readings is not None
    assert len(summary.readings["rows"]) >= 16
    _, unchecked = run(False)
    by_check = [p for p, n in checked.items() if n > unchecked[p]]
    assert by_check, "the check read no zero-shot prompt (its shuffled rows at least)"
    again = [p for p in by_check if unchecked[p]]
    assert not again, f"the check read {len(again)} zero-shot prompts the run read, e.g. {again[0]!r}"
