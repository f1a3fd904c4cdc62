"""Unit tests for icm_cli.algorithm.tasks (rows -> examples, constraints, batches, row labels) and
icm_cli.algorithm.scoring (prompt layout and the coherence scorer), with fake backends only."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from typing import Any, Sequence

import pytest

from icm_cli.backends.base import BackendStats, ScoreRequest
from icm_cli.foundation.config import TaskConfig
from icm_cli.data.tables import Dataset, Row
from icm_cli.foundation.errors import InputError
from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet, leave_one_out_contexts
from icm_cli.algorithm.search import TRUE, Constraint, predictability
from icm_cli.algorithm.tasks import Task, build_task, row_label

FALSE = 1


# --------------------------------------------------------------------------- helpers


def dataset(*rows: dict[str, Any], source: str = "data.jsonl") -> Dataset:
    return Dataset(source, [Row(k + 1, dict(r)) for k, r in enumerate(rows)], "0" * 16)


def words(text: str) -> int:
    return len(text.split())


def logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


CLAIMS = TaskConfig(
    type="claims",
    template="Q: {question}\nA: {answer}\nCorrect?",
    labels=("True", "False"),
    group_field="qid",
    key_field="final",
)

COMPARISON = TaskConfig(
    type="comparison",
    template="Prompt: {prompt}\nResponse 1: {a}\nResponse 2: {b}\nResponse 1 is better:",
    labels=("True", "False"),
    pair_fields=("a", "b"),
)


def claims_rows() -> Dataset:
    return dataset(
        {"question": "2+2", "answer": "It is 4", "qid": "q1", "final": "4"},
        {"question": "2+2", "answer": "Four", "qid": "q1", "final": "4"},
        {"question": "2+2", "answer": "5", "qid": "q1", "final": "5"},
        {"question": "3*3", "answer": "9", "qid": "q2", "final": "9"},
        {"question": "3*3", "answer": "6", "qid": "q2", "final": "6"},
        {"question": "1-1", "answer": "0", "qid": "q3", "final": "0"},
    )


# --------------------------------------------------------------------------- build_task


def test_classification_one_example_per_row_with_template_rendered():
    ds = dataset({"text": "great film"}, {"text": "awful", "extra": 3}, {"text": 42})
    task = build_task(ds, TaskConfig())
    assert [ex.query for ex in task.examples] == ["Input: great film\nLabel:", "Input: awful\nLabel:", "Input: 42\nLabel:"]
    assert [ex.row for ex in task.examples] == [0, 1, 2]
    assert all(ex.group is None and ex.key is None and not ex.swapped for ex in task.examples)
    assert task.constraints == ()
    assert task.label_words == ("positive", "negative")
    assert task.calibrate is True  # "auto" is on for classification


def test_template_with_several_fields_and_repeats():
    cfg = dataclasses.replace(TaskConfig(), template="{title} / {body} / {title}", labels=("a", "b", "c"))
    task = build_task(dataset({"title": "T", "body": "B"}), cfg)
    assert task.examples[0].query == "T / B / T"
    assert task.label_words == ("a", "b", "c")


def test_classification_ignores_group_keys_for_constraints():
    cfg = dataclasses.replace(TaskConfig(), group_field="g", key_field="k")
    ds = dataset({"text": "a", "g": "x", "k": "1"}, {"text": "b", "g": "x", "k": "2"})
    task = build_task(ds, cfg)
    assert task.constraints == ()
    assert [ex.group for ex in task.examples] == ["x", "x"]


def test_claims_constraints_within_groups():
    task = build_task(claims_rows(), CLAIMS)
    assert len(task.examples) == 6
    assert [ex.group for ex in task.examples] == ["q1", "q1", "q1", "q2", "q2", "q3"]
    assert [ex.key for ex in task.examples] == ["4", "4", "5", "9", "6", "0"]
    assert set(task.constraints) == {
        Constraint(0, 1, "equal"),  # same final answer: must agree
        Constraint(0, 2, "not_both_true"),  # different answers cannot both be true
        Constraint(1, 2, "not_both_true"),
        Constraint(3, 4, "not_both_true"),
    }
    assert len(task.constraints) == 4
    groups = [ex.group for ex in task.examples]
    assert all(groups[c.i] == groups[c.j] for c in task.constraints)  # none across groups
    assert all(c.i < c.j for c in task.constraints)
    assert task.calibrate is False  # "auto" is off for claims


def test_claims_groups_need_not_be_contiguous():
    ds = dataset(
        {"question": "a", "answer": "1", "qid": "g1", "final": "x"},
        {"question": "b", "answer": "2", "qid": "g2", "final": "x"},
        {"question": "a", "answer": "3", "qid": "g1", "final": "y"},
    )
    task = build_task(ds, CLAIMS)
    assert task.constraints == (Constraint(0, 2, "not_both_true"),)


def test_claims_without_key_field_has_no_constraints():
    cfg = dataclasses.replace(CLAIMS, key_field=None)
    task = build_task(claims_rows(), cfg)
    assert task.constraints == ()
    assert [ex.group for ex in task.examples] == ["q1", "q1", "q1", "q2", "q2", "q3"]
    assert all(ex.key is None for ex in task.examples)


def test_claims_group_and_key_values_may_be_numbers():
    ds = dataset(
        {"question": "a", "answer": "1", "qid": 7, "final": 1},
        {"question": "a", "answer": "2", "qid": 7, "final": 1.0},
        {"question": "a", "answer": "3", "qid": 7, "final": 2},
    )
    task = build_task(ds, CLAIMS)
    assert {ex.group for ex in task.examples} == {"7"}
    assert Constraint(0, 2, "not_both_true") in task.constraints


def test_comparison_two_examples_per_row():
    ds = dataset(
        {"prompt": "Say hi", "a": "Hello!", "b": "Go away."},
        {"prompt": "Add 2+2", "a": "5", "b": "4"},
    )
    task = build_task(ds, COMPARISON)
    assert len(task.examples) == 4
    first, second = task.examples[0], task.examples[1]
    assert first.query == "Prompt: Say hi\nResponse 1: Hello!\nResponse 2: Go away.\nResponse 1 is better:"
    assert second.query == "Prompt: Say hi\nResponse 1: Go away.\nResponse 2: Hello!\nResponse 1 is better:"
    assert (first.swapped, second.swapped) == (False, True)
    assert first.row == second.row == 0
    assert task.examples[2].row == task.examples[3].row == 1
    assert task.examples[3].swapped and not task.examples[2].swapped
    assert first.group == second.group
    assert task.examples[2].group == task.examples[3].group != first.group
    assert task.constraints == (Constraint(0, 1, "exactly_one_true"), Constraint(2, 3, "exactly_one_true"))
    assert task.calibrate is False


def test_comparison_with_group_field_keeps_user_group():
    cfg = dataclasses.replace(COMPARISON, group_field="topic")
    ds = dataset(
        {"prompt": "p", "a": "x", "b": "y", "topic": "t1"},
        {"prompt": "q", "a": "x", "b": "y", "topic": "t1"},
    )
    task = build_task(ds, cfg)
    assert [ex.group for ex in task.examples] == ["t1"] * 4
    assert task.constraints == (Constraint(0, 1, "exactly_one_true"), Constraint(2, 3, "exactly_one_true"))


def test_template_field_missing_everywhere_names_the_field():
    cfg = dataclasses.replace(TaskConfig(), template="Review: {review}\nLabel:")
    with pytest.raises(InputError) as info:
        build_task(dataset({"text": "a"}, {"text": "b"}), cfg)
    assert "review" in info.value.message
    assert "data.jsonl" in info.value.message


@pytest.mark.parametrize("bad", ["missing", None, ["a"], {"x": 1}, True])
def test_bad_field_on_one_row_names_file_line_and_field(bad):
    rows = [{"text": "fine"}, {"text": "fine too"}, {"other": 1}]
    if bad != "missing":
        rows[2]["text"] = bad
    with pytest.raises(InputError) as info:
        build_task(dataset(*rows, source="in.jsonl"), TaskConfig())
    assert "in.jsonl:3" in info.value.message
    assert "'text'" in info.value.message


def test_bad_group_field_names_line():
    ds = claims_rows()
    ds.rows[4].fields["qid"] = None
    with pytest.raises(InputError) as info:
        build_task(ds, CLAIMS)
    assert "data.jsonl:5" in info.value.message and "'qid'" in info.value.message


def test_missing_pair_field_names_line_and_field():
    ds = dataset({"prompt": "p", "a": "x", "b": "y"}, {"prompt": "p", "a": "x"})
    with pytest.raises(InputError) as info:
        build_task(ds, COMPARISON)
    assert "data.jsonl:2" in info.value.message and "'b'" in info.value.message


def test_error_line_is_the_row_line_not_its_position():
    ds = Dataset("f.jsonl", [Row(1, {"text": "a"}), Row(7, {"nope": "b"})], "x")
    with pytest.raises(InputError) as info:
        build_task(ds, TaskConfig())
    assert "f.jsonl:7" in info.value.message


# --------------------------------------------------------------------------- row_label


def _lp(*probs: float) -> tuple[float, ...]:
    return tuple(math.log(p) for p in probs)


def _rows(task: Task, labels: dict[int, int], scores: dict, source: dict, agreement: dict | None = None) -> list:
    members: dict[int, list[int]] = {}
    for i, ex in enumerate(task.examples):
        members.setdefault(ex.row, []).append(i)
    agreement = agreement or {}
    return [row_label(task.label_words, [task.examples[i] for i in m], [labels[i] for i in m], [scores[i] for i in m],
                      [source[i] for i in m], [agreement.get(i) for i in m]) for _, m in sorted(members.items())]


def test_row_label_classification():
    task = build_task(dataset({"text": "a"}, {"text": "b"}, {"text": "c"}), TaskConfig())
    scores = {0: _lp(0.7, 0.3), 1: _lp(0.2, 0.8), 2: _lp(0.5, 0.5)}
    out = _rows(task, {0: 1, 1: 1, 2: 0}, scores, {0: "core", 1: "transfer", 2: "transfer"})
    assert [r.label for r in out] == ["negative", "negative", "positive"]
    assert [r.confidence for r in out] == [pytest.approx(0.3), pytest.approx(0.8), pytest.approx(0.5)]
    assert [r.source for r in out] == ["core", "transfer", "transfer"]
    assert [r.searched for r in out] == [True, False, False]


@pytest.mark.parametrize(
    ("p_ab", "p_ba", "label_ab", "label_ba", "word", "source"),
    [
        (0.8, 0.3, TRUE, FALSE, "True", ("core", "core")),  # both orders say the first is better
        (0.8, 0.3, TRUE, FALSE, "True", ("transfer", "transfer")),
        (0.2, 0.9, FALSE, TRUE, "False", ("core", "transfer")),  # one order transferred: a transfer row
        (0.6, 0.7, FALSE, TRUE, "False", ("core", "core")),  # labelled one way, model unsure: label kept
    ],
)
def test_row_label_comparison_pair_becomes_one_row(p_ab, p_ba, label_ab, label_ba, word, source):
    task = build_task(dataset({"prompt": "p", "a": "x", "b": "y"}), COMPARISON)
    scores = {0: _lp(p_ab, 1 - p_ab), 1: _lp(p_ba, 1 - p_ba)}
    out = _rows(task, {0: label_ab, 1: label_ba}, scores, dict(enumerate(source)))
    assert len(out) == 1
    p_first = (p_ab + (1 - p_ba)) / 2  # P(first better), averaged over both orders
    expected_conf = p_first if word == "True" else 1 - p_first
    assert out[0].label == word
    assert out[0].confidence == pytest.approx(expected_conf, abs=1e-6)
    assert out[0].source == ("core" if source == ("core", "core") else "transfer")


def test_row_label_comparison_multiple_rows_keep_row_order():
    task = build_task(
        dataset({"prompt": "p", "a": "x", "b": "y"}, {"prompt": "q", "a": "x", "b": "y"}), COMPARISON
    )
    scores = {0: _lp(0.9, 0.1), 1: _lp(0.1, 0.9), 2: _lp(0.3, 0.7), 3: _lp(0.6, 0.4)}
    out = _rows(task, {0: TRUE, 1: FALSE, 2: FALSE, 3: TRUE}, scores, dict.fromkeys(range(4), "core"))
    assert [r.label for r in out] == ["True", "False"]
    assert out[0].confidence == pytest.approx(0.9, abs=1e-6)
    assert out[1].confidence == pytest.approx(1 - (0.3 + 0.4) / 2, abs=1e-6)


def test_row_label_agreement_is_the_least_of_a_rows_examples():
    task = build_task(dataset({"prompt": "p", "a": "x", "b": "y"}), COMPARISON)
    scores = {0: _lp(0.9, 0.1), 1: _lp(0.1, 0.9)}
    (row,) = _rows(task, {0: TRUE, 1: FALSE}, scores, {0: "transfer", 1: "transfer"}, {0: 1.0, 1: 0.5})
    assert row.agreement == 0.5


# --------------------------------------------------------------------------- leave_one_out_contexts


@pytest.mark.parametrize("n", range(1, 41))
def test_leave_one_out_contexts_give_exactly_the_others(n):
    members = [3 * k + 1 for k in range(n)]  # arbitrary, non-contiguous ids
    contexts = leave_one_out_contexts(members)
    assert sorted(contexts) == members
    for m, ctx in contexts.items():
        expected = Counter(members)
        expected[m] -= 1
        assert Counter(ctx) == +expected


@pytest.mark.parametrize("n", [8, 16, 25, 32, 40])
def test_leave_one_out_contexts_share_prefixes(n):
    contexts = leave_one_out_contexts(list(range(n)))
    prefixes = {tuple(ctx[:k]) for ctx in contexts.values() for k in range(1, len(ctx) + 1)}
    # each prompt's n-1 demonstrations would give n(n-1) distinct prefixes without sharing;
    # the halving layout needs only about n log2 n
    assert len(prefixes) <= n * math.ceil(math.log2(n))
    assert len(prefixes) < n * (n - 1) / 2


def test_leave_one_out_contexts_empty_and_deterministic():
    assert leave_one_out_contexts([]) == {}
    assert leave_one_out_contexts([5]) == {5: []}
    assert leave_one_out_contexts(range(13)) == leave_one_out_contexts(list(range(13)))


# --------------------------------------------------------------------------- CoherenceScorer


class FakeBackend:
    """Deterministic 'log-probabilities' from a hash of the prompt and continuation."""

    name = "fake"
    model_name = "fake-model"
    max_context = 100_000

    def __init__(self):
        self.stats = BackendStats()
        self.calls = 0
        self.batches: list[list[ScoreRequest]] = []

    def score(self, requests):
        self.calls += 1
        self.batches.append(list(requests))
        self.stats.requests += len(requests)
        out = []
        for r in requests:
            prompt = "".join(r.segments)
            self.stats.tokens_requested += self.count_tokens(prompt)
            row = []
            for c in r.continuations:
                h = hashlib.sha256((prompt + "\x00" + c).encode()).digest()
                row.append(-0.1 - 8.0 * int.from_bytes(h[:8], "big") / 2**64)  # unnormalised, in (-8.1, -0.1]
            out.append(row)
        return out

    def count_tokens(self, text):
        return len(text.split())


def _prompts(n=6, k=2, calibrate=False) -> PromptSet:
    words_ = ("True", "False", "Maybe", "Never")[:k]
    return PromptSet(tuple(f"Claim {i}: item {i * 7 % 5}.\nVerdict:" for i in range(n)), words_, calibrate=calibrate)


def test_scorer_returns_normalised_log_probs():
    scorer = CoherenceScorer(_prompts(6), FakeBackend())
    for labels in [(0, 1, None, 0, None, 1), (None,) * 6, (1,) * 6]:
        ev = scorer.evaluate(labels)
        assert len(ev.scores) == 6
        for row in ev.scores:
            assert len(row) == 2
            assert logsumexp(row) == pytest.approx(0.0, abs=1e-12)
            assert all(v <= 0 for v in row)


def test_scorer_requests_are_leave_one_out_and_full_context():
    p = _prompts(5)
    scorer = CoherenceScorer(p, FakeBackend())
    labels = (0, None, 1, 0, None)
    requests, examples = scorer.requests(labels)
    assert sorted(examples) == [0, 1, 2, 3, 4]
    labelled = [0, 2, 3]
    for r, i in zip(requests, examples):
        assert r.continuations == (" True", " False")
        assert r.segments[-1] == p.queries[i]
        demos = Counter(r.segments[:-1])
        others = [j for j in labelled if j != i]
        assert demos == Counter(p.demo(j, labels[j]) for j in others)
    assert p.demo(2, 1) == p.queries[2] + " False\n\n"


def test_scorer_memoises_repeated_labellings():
    backend = FakeBackend()
    scorer = CoherenceScorer(_prompts(6), backend)
    labels = (0, 1, None, 0, None, 1)
    a = scorer.evaluate(labels)
    b = scorer.evaluate(tuple(labels))
    assert a == b
    assert backend.calls == 1
    assert scorer.memo_hits == 1
    scorer.evaluate(labels, order=(0, 1, 3, 5))  # index order spelled out: the same prompts
    assert backend.calls == 1
    scorer.evaluate(labels, order=(5, 0, 1, 3))  # another order: other prompts
    assert backend.calls == 2
    scorer.evaluate((1, 1, None, 0, None, 1))
    assert backend.calls == 3


def test_scorer_memo_is_bounded():
    backend = FakeBackend()
    scorer = CoherenceScorer(_prompts(4), backend, memo_size=1)
    a, b = (0, 1, None, None), (1, 1, None, None)
    scorer.evaluate(a)
    scorer.evaluate(b)
    scorer.evaluate(a)  # evicted by b
    assert backend.calls == 3


def test_scorer_is_deterministic_across_instances():
    labels = (0, 1, 1, None, 0, None)
    a = CoherenceScorer(_prompts(6), FakeBackend()).evaluate(labels)
    b = CoherenceScorer(_prompts(6), FakeBackend()).evaluate(labels)
    assert a == b


@pytest.mark.parametrize("label", [0, 1])
@pytest.mark.parametrize(
    "pattern", [(1, 1, 1, 1, 1, 1, 1, 1), (1, 0, 1, 1, 0, 1, 1, 1), (1, 1, 0, 0, 0, 0, 1, 1)]
)
def test_calibrated_all_same_label_has_zero_predictability(label, pattern):
    scorer = CoherenceScorer(_prompts(8, calibrate=True), FakeBackend())
    labels = tuple(label if keep else None for keep in pattern)
    ev = scorer.evaluate(labels)
    assert predictability(labels, ev, "mean_logodds") == pytest.approx(0.0, abs=1e-9)
    for row in ev.scores:
        assert logsumexp(row) == pytest.approx(0.0, abs=1e-12)


def test_uncalibrated_all_same_label_is_generally_not_zero():
    scorer = CoherenceScorer(_prompts(8, calibrate=False), FakeBackend())
    labels = (0,) * 8
    assert abs(predictability(labels, scorer.evaluate(labels), "mean_logodds")) > 1e-3


def test_scorer_handles_no_labels_and_no_examples():
    backend = FakeBackend()
    scorer = CoherenceScorer(_prompts(3), backend)
    ev = scorer.evaluate((None, None, None))
    assert len(ev.scores) == 3
    requests, _ = scorer.requests((None, None, None))
    assert all(len(r.segments) == 1 for r in requests)  # empty context: the query alone
    empty = CoherenceScorer(PromptSet((), ("True", "False")), FakeBackend())
    assert empty.evaluate(()).scores == ()
