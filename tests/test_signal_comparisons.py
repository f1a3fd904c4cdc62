"""The signal check and the run's decisions on comparisons, through the runner with fake models: a
row is judged on both of its orders together, the part of the reading that compares the two
candidates. A model that reads only what both orders share (the query, a bias to one answer) gives
labels that are noise however much its readings follow the words; the real model did exactly this
on Alpaca pairs (README, "Is there signal?")."""

from __future__ import annotations

import hashlib
import math
import random
import re

from icm_cli.algorithm.tasks import TaskShape
from icm_cli.data.row_index import Selection, build_index
from icm_cli.data.sources import MemorySource
from icm_cli.foundation.config import CheckConfig, Config, CoreConfig, SearchConfig, TaskConfig, TransferConfig
from icm_cli.run.runner import RunHooks, RunInput, label_dataset

from fakes import BAD, GOOD, SentimentBackend

TASK = TaskConfig(type="comparison", labels=("True", "False"), id_field="id", pair_fields=("a", "b"),
                  template="Query: {question}\nResponse 1: {a}\nResponse 2: {b}\nClaim: Response 1 is better "
                           "than Response 2.\nI think this claim is")


def lean(text: str) -> int:
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in GOOD for w in words) - sum(w in BAD for w in words)


def jitter(text: str) -> float:
    """A small reading of any string, its letters shuffled or not: what a model reads in text
    whatever it says."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32 - 0.5


class Reader(SentimentBackend):
    """Reads the claim 'Response 1 is better' from the prompt's last query: `compares` weighs the
    two responses' difference, `query` what the question says (the same in both orders)."""

    def __init__(self, compares: float, query: float):
        super().__init__()
        self.compares, self.query = compares, query

    def score(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            text = r.segments[-1]
            self.stats.tokens_computed += len(text.split())
            question = text.split("\nResponse 1: ")[0]
            first = text.split("Response 1: ")[1].split("\nResponse 2: ")[0]
            second = text.split("Response 2: ")[1].split("\nClaim:")[0]
            logit = (self.compares * (lean(first) - lean(second)) + self.query * lean(question)
                     + 0.3 * jitter(first + "|" + second))
            out.append([-math.log1p(math.exp(-logit)), -math.log1p(math.exp(logit))])
        return out


def pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    good, bad, plain = sorted(GOOD), sorted(BAD), ["fine", "okay", "plain", "so", "the"]

    def words(k: int, pool: list[str]) -> str:
        return " ".join(rng.choice(pool) for _ in range(k))

    rows = []
    for k in range(n):
        better, worse = f"{words(2, good)} {words(2, plain)}", f"{words(2, bad)} {words(2, plain)}"
        first = rng.random() < 0.5
        question = f"question {k}: {words(2, good if rng.random() < 0.5 else bad)} {words(2, plain)}"
        rows.append({"id": f"p{k}", "question": question, "a": better if first else worse, "b": worse if first else better})
    return rows


def check(backend: SentimentBackend, n: int = 120) -> dict:
    shape = TaskShape(TASK)
    data = RunInput(build_index(MemorySource("pairs.jsonl", pairs(n)), Selection(), shape.check, TASK.id_field), shape)
    config = Config(task=TASK, search=SearchConfig(initial_labels=2, iterations=20, seed=1),
                    core=CoreConfig(max_tokens=200, count=1), transfer=TransferConfig(chunk_size=16, zero_shot="off"),
                    check=CheckConfig(signal=True))
    summary = label_dataset(data, config, backend, RunHooks())
    assert summary.signal is not None and summary.readings is not None
    return {"signal": summary.signal, "readings": summary.readings}


def test_a_model_that_compares_the_candidates_is_signal_judged_a_row_at_a_time():
    found = check(Reader(compares=1.5, query=0.0))
    assert found["signal"]["verdict"] == "signal", found["signal"]
    sample = found["readings"]
    # One entry a row, its first order's: the rows sampled, each read in both orders.
    assert set(sample["examples"]) == {0} and len(sample["rows"]) == len(set(sample["rows"])) >= 16


def test_a_model_that_reads_only_what_both_orders_share_is_not_signal():
    """Its readings follow the words (the query's), so the per-example content ratio called it
    `signal`; a row's two orders say the same, and the label of the pair rests on the jitter."""
    found = check(Reader(compares=0.0, query=1.5))
    assert found["signal"]["verdict"] == "none", found["signal"]
    assert "shuffled letters" in found["signal"]["reason"]


def test_two_cores_that_do_not_confirm_their_departure_are_checked_on_both_orders(monkeypatch):
    """The labels are then the zero-shot reading, and the rows left were read zero-shot only: a
    sampled row's other order is read after the cores' demonstrations for the check alone (it
    crashed on the missing readings), and the labels are the same as without the check."""
    from icm_cli.run import second_core, signal_check

    monkeypatch.setattr(second_core, "DEPARTS", 1.01)  # any departure asks for a second core
    monkeypatch.setattr(signal_check.TwoCores, "confirms", lambda self: False)
    shape = TaskShape(TASK)

    def run(signal: bool):
        data = RunInput(build_index(MemorySource("pairs.jsonl", pairs(160)), Selection(), shape.check, TASK.id_field),
                        shape)
        config = Config(task=TASK, search=SearchConfig(initial_labels=2, iterations=10, seed=1),
                        core=CoreConfig(max_tokens=200, count="auto", second_tokens=120),
                        transfer=TransferConfig(chunk_size=16, zero_shot="on"), check=CheckConfig(signal=signal))
        rows: list = []
        summary = label_dataset(data, config, Reader(compares=1.5, query=0.0), RunHooks(on_rows=rows.extend))
        return [(r.label, r.confidence) for _, _, r in rows], summary

    labels, summary = run(True)
    assert summary.cores == 2 and summary.departure_confirmed is False and summary.reading_weights == [0.0, 0.0, 1.0]
    sample = summary.readings
    assert sample is not None and sample["zero_shot_alone"] and len(sample["cores_reading"]) == len(sample["rows"])
    assert "zero_shot_kappa" not in {f["name"] for f in summary.signal["figures"]}
    assert summary.signal["verdict"] == "signal"
    assert labels == run(False)[0]


class LeansTrueAfterDemos(Reader):
    """After any demonstrations, every order reads far more True (an uncalibrated core's bias, as
    the real model's first core said True to every sampled order of 200 tweet pairs): what
    separates the candidates is unchanged, so the two orders read together agree with zero-shot."""

    def score(self, requests):
        out = super().score(requests)
        return [[a + 6.0, b] if len(r.segments) > 1 else [a, b] for r, (a, b) in zip(requests, out)]


def test_the_runs_decisions_compare_a_comparison_a_row_at_a_time():
    """core.count auto's kappa and the zero-shot rule's: per order, the biased core says True
    everywhere and its kappa with zero-shot is 0, so a second core was searched for a departure
    that is only a bias; per row, the bias cancels and the two readings agree."""
    shape = TaskShape(TASK)
    data = RunInput(build_index(MemorySource("pairs.jsonl", pairs(160)), Selection(), shape.check, TASK.id_field), shape)
    config = Config(task=TASK, search=SearchConfig(initial_labels=2, iterations=10, seed=1),
                    core=CoreConfig(max_tokens=200, count="auto", second_tokens=120),
                    transfer=TransferConfig(chunk_size=16, zero_shot="auto"), check=CheckConfig(signal=False))
    summary = label_dataset(data, config, LeansTrueAfterDemos(compares=1.5, query=0.0), RunHooks())
    assert summary.core_kappa is not None and summary.core_kappa >= 0.8, summary.core_choice
    assert summary.second_core is False
    assert summary.zero_shot_kappa is not None and summary.zero_shot_kappa >= 0.8, summary.zero_shot_rule
    assert "rows (both orders of each)" in summary.zero_shot_rule
