"""`icm label --fixed`: rows a person labelled are held by the search, the cores, the transfer
and the output (fake scorers and the fake backend; the real model in tests/test_fixed_model.py)."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Sequence

import pytest
from typer.testing import CliRunner

import icm_cli.algorithm.search as search_module
from icm_cli.backends import loading
from icm_cli.cli import app
from icm_cli.run.checkpoint import Checkpoint
from icm_cli.foundation.config import Config, CoreConfig, SearchConfig, TaskConfig
from icm_cli.algorithm.core_labels import label_core
from icm_cli.algorithm.cores import plan_run
from icm_cli.foundation.errors import InputError
from icm_cli.data.human_labels import HumanLabels, read_human_labels
from icm_cli.data.row_index import Selection, build_index
from icm_cli.run.runner import RunHooks, RunInput, RunState, label_dataset
from icm_cli.algorithm.scoring import PromptSet
from icm_cli.algorithm.search import TRUE, ConsistencyGroup, Evaluation, Problem, run_search
from icm_cli.data.sources import MemorySource
from icm_cli.algorithm.tasks import TaskShape, pair_constraints

from fakes import SentimentBackend
from test_run_shape import TASK, config, tweet_rows, words

FALSE = 1


def params(**overrides) -> SearchConfig:
    return dataclasses.replace(SearchConfig(final_quench=False), **overrides)


class Against:
    """Reads every example as its `preferred` label, confidently, whatever the context: the
    search would flip every fixed example whose label differs, were it allowed to."""

    def __init__(self, preferred: Sequence[int], margin: float = 3.0):
        self.preferred = tuple(preferred)
        self.margin = margin
        self.seen: list[tuple] = []

    def evaluate(self, labels, order=None):
        self.seen.append((tuple(labels), tuple(order) if order is not None else None))
        rows = []
        for y in self.preferred:
            logits = [0.0, 0.0]
            logits[y] = self.margin
            top = max(logits)
            total = top + math.log(sum(math.exp(v - top) for v in logits))
            rows.append(tuple(v - total for v in logits))
        return Evaluation(tuple(rows))


# --------------------------------------------------------------------------- the search


FIXED = (FALSE, None, None, TRUE, None, None, None, FALSE, None, None)
PREFERRED = (TRUE,) * 10  # the model would call every example TRUE, the fixed FALSE ones included


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quench", [False, True])
def test_the_search_never_flips_a_fixed_label(seed, quench):
    problem = Problem(10, 2, fixed=FIXED)
    scorer = Against(PREFERRED)
    steps = []
    result = run_search(problem, scorer, params(seed=seed, iterations=200, initial_labels=2, final_quench=quench),
                        steps.append)
    for labels, _ in scorer.seen:  # every labelling the model was asked about
        assert all(labels[i] == y for i, y in enumerate(FIXED) if y is not None)
    assert all(step.labels[i] == y for step in steps for i, y in enumerate(FIXED) if y is not None)
    assert [result.labels[i] for i in (0, 3, 7)] == [FALSE, TRUE, FALSE]
    # Everything free followed the model, and the search knows it is done (no endless proposals
    # against the held disagreement).
    assert all(result.labels[i] == TRUE for i in range(10) if FIXED[i] is None)
    assert result.converged and result.iterations < 200


def test_fixed_labels_are_demonstrations_from_the_start_and_count_in_p():
    problem = Problem(10, 2, fixed=FIXED)
    scorer = Against(PREFERRED)
    result = run_search(problem, scorer, params(seed=1, iterations=50, initial_labels=2))
    first_labels, first_order = scorer.seen[0]
    assert sum(y is not None for y in first_labels) == 5  # the three fixed and two seed labels
    assert all(first_labels[i] == FIXED[i] for i in (0, 3, 7))
    assert first_order[:3] == (0, 3, 7)  # first in labelling order: the stable part of every prompt
    # P(D) is the mean log-odds over every labelled example, the fixed ones included: two of the ten
    # are read against their label (-3 each), eight with it (+3 each).
    assert result.predictability == pytest.approx((8 * 3 - 2 * 3) / 10)


def test_a_zero_shot_start_keeps_the_fixed_labels():
    problem = Problem(10, 2, fixed=FIXED)
    scorer = Against(PREFERRED)
    result = run_search(problem, scorer, params(iterations=20), start=(TRUE,) * 10)
    assert scorer.seen[0][0][0] == FALSE and result.labels[7] == FALSE


def test_proposals_never_pick_a_fixed_example():
    groups = ("g", "g") + (None,) * 8
    for weight in (1.0, 100.0):
        problem = Problem(10, 2, (), groups, fixed=FIXED)
        s = search_module._Search(problem, Against(PREFERRED), params(group_weight=weight), random.Random(0))
        picks = Counter(s.pick((TRUE,) + (None,) * 9) for _ in range(3000))
        assert not {0, 3, 7} & set(picks) and len(picks) == 7


def test_nothing_fixed_is_the_search_as_before():
    problem = Problem(12, 2)
    held_none = Problem(12, 2, fixed=(None,) * 12)
    truth = (0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0)
    a = run_search(problem, Against(truth, 1.0), params(seed=3, iterations=80))
    b = run_search(held_none, Against(truth, 1.0), params(seed=3, iterations=80))
    assert (a.labels, a.order, a.proposals, a.accepted, a.evaluations) == (
        b.labels, b.order, b.proposals, b.accepted, b.evaluations)


def test_everything_fixed_costs_one_evaluation():
    problem = Problem(4, 2, fixed=(TRUE, FALSE, FALSE, TRUE))
    result = run_search(problem, Against((FALSE,) * 4), params(iterations=100, final_quench=True))
    assert result.labels == (TRUE, FALSE, FALSE, TRUE) and result.converged and result.evaluations == 1


# --------------------------------------------------------------------------- consistency repair


def pair_problem(fixed) -> Problem:
    """Two comparison pairs (0, 1) and (2, 3): exactly one order of each is true."""
    groups = (ConsistencyGroup("pair", (0, 1)), ConsistencyGroup("pair", (2, 3)))
    return Problem(4, 2, pair_constraints(groups), ("a", "a", "b", "b"), groups, fixed)


@pytest.mark.parametrize("seed", range(4))
def test_consistency_fix_repairs_around_a_fixed_member(seed):
    # The model calls every order true; 0 is fixed true, so its partner must become false, and
    # 2 fixed false makes 3 true: ConsistencyFix may only choose the options that agree.
    problem = pair_problem((TRUE, None, FALSE, None))
    scorer = Against((TRUE,) * 4, margin=0.5)
    result = run_search(problem, scorer, params(seed=seed, iterations=60, alpha=1.0, initial_labels=4))
    assert result.labels == (TRUE, FALSE, FALSE, TRUE) and result.inconsistent == 0
    assert all(labels[0] == TRUE and labels[2] == FALSE for labels, _ in scorer.seen)


def test_a_violation_between_two_fixed_members_is_left_and_the_search_ends():
    # A person said both orders of pair (0, 1) are true: no repair may change that, and the
    # search must not keep trying (the pair counts in I(D), but it is no proposal).
    problem = pair_problem((TRUE, TRUE, None, None))
    scorer = Against((TRUE, TRUE, TRUE, FALSE), margin=2.0)
    result = run_search(problem, scorer, params(seed=0, iterations=300, initial_labels=4))
    assert result.labels[:2] == (TRUE, TRUE) and result.labels[2:] == (TRUE, FALSE)
    assert result.inconsistent == 1 and result.converged and result.iterations < 300


def test_repairs_outside_the_search_hold_fixed_labels():
    # Bootstrap and the zero-shot start label by consistency.repair: it must hold fixed examples.
    backend = SentimentBackend()
    queries = ("Tweet: great\nSentiment:", "Tweet: awful\nSentiment:", "Tweet: love it\nSentiment:",
               "Tweet: sad late\nSentiment:")
    prompts = PromptSet(queries, ("positive", "negative"), calibrate=True)
    problem = Problem(4, 2, fixed=(FALSE, None, None, TRUE))  # both against the words
    for method, init in (("bootstrap", "random"), ("icm", "zero_shot")):
        outcome = label_core(problem, prompts, backend, params(method=method, init=init, iterations=20))
        assert outcome.labels[0] == FALSE and outcome.labels[3] == TRUE
        assert outcome.labels[1:3] == (FALSE, TRUE)


# --------------------------------------------------------------------------- cores


def as_input(rows, fixed: dict[int, int], task: TaskConfig = TASK) -> RunInput:
    shape = TaskShape(task)
    index = build_index(MemorySource("tweets.jsonl", rows), Selection(), shape.check, task.id_field)
    return RunInput(index, shape, HumanLabels("fix.jsonl", fixed, "d" if fixed else ""))


def test_fixed_rows_join_every_core_on_top_of_its_sample():
    fixed = {2: 1, 11: 0, 30: 1}
    inp = as_input(tweet_rows(60), fixed)
    plain = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, count=2), seed=5)
    plan = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, count=2), seed=5, fixed=fixed)
    assert plan.fixed == fixed and plan.fixed_demos == 3
    for before, core in zip(plain.cores, plan.cores):
        assert set(fixed) <= set(core.rows)
        held = {core.ids[k]: y for k, y in enumerate(core.problem.fixed) if y is not None}
        assert held == fixed
        # The sample is the one a run without corrections draws, less any fixed row it drew.
        sample = set(core.rows) - set(fixed)
        assert set(before.rows) - set(fixed) <= sample
    assert plan.core_examples() == len({r for c in plan.cores for r in c.rows})


def test_fixed_rows_past_their_budget_are_held_but_no_demonstration():
    fixed = {k: k % 2 for k in range(0, 40, 2)}  # 20 rows of 7 words: 10 tokens a demonstration
    inp = as_input(tweet_rows(60), fixed)
    plan = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, fixed_tokens=45), seed=1, fixed=fixed)
    (core,) = plan.cores
    demos = [core.rows[k] for k, y in enumerate(core.problem.fixed) if y is not None]
    assert plan.fixed_demos == len(demos) == 4 and set(demos) <= set(fixed)
    assert plan.fixed == fixed  # all 20 held all the same
    none = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, fixed_tokens=0), seed=1, fixed=fixed)
    assert none.fixed_demos == 0 and none.cores[0].problem.fixed == ()


# --------------------------------------------------------------------------- a whole run


def run_rows(inp: RunInput, cfg: Config) -> tuple[list, object]:
    out: list = []
    summary = label_dataset(inp, cfg, SentimentBackend(), RunHooks(on_rows=lambda rows: out.extend(rows)))
    return out, summary


def test_a_run_keeps_the_fixed_labels_marks_them_human_and_counts_them():
    rows = tweet_rows(40)
    # Against the keyword reading: row 1 says "awful", row 3 "bad"... label them the other way.
    fixed = {1: 1, 3: 0, 5: 1, 8: 0, 20: 0, 33: 1}
    cfg = config(core={"fixed_tokens": 25})  # room for two of the six as demonstrations
    out, summary = run_rows(as_input(rows, fixed), cfg)
    assert [r for r, _, _ in out] == list(range(40))
    for r, _, label in out:
        if r in fixed:
            assert (label.label, label.source, label.confidence) == (("positive", "negative")[fixed[r]], "human", 1.0)
        else:
            assert label.source in ("core", "transfer")
    assert summary.fixed_rows == 6 and summary.fixed_demonstrations == 2 and summary.fixed_digest == "d"
    assert summary.core_rows + summary.transfer_rows + summary.fixed_rows == 40
    assert summary.fixed_disagreed is not None and 0 <= summary.fixed_disagreed <= 2
    again, _ = run_rows(as_input(rows, fixed), cfg)
    assert [(r, lab) for r, _, lab in again] == [(r, lab) for r, _, lab in out]  # deterministic


def test_the_transfer_reads_the_fixed_rows_as_demonstrations():
    rows = tweet_rows(40)
    fixed = {1: 1, 3: 0}
    inp = as_input(rows, fixed)
    backend = SentimentBackend()
    seen: list = []
    score = backend.score
    backend.score = lambda requests: seen.extend(requests) or score(requests)  # type: ignore[method-assign]
    label_dataset(inp, config(), backend, RunHooks(on_rows=lambda _: None))
    last = seen[-1]  # a transfer request: the core's demonstrations, then the row
    demos = "".join(last.segments[:-1])
    for r, y in fixed.items():
        assert f"Tweet: {rows[r]['text']}\nSentiment: {('positive', 'negative')[y]}\n\n" in demos


def test_a_claims_group_is_repaired_around_its_fixed_member():
    claims = TaskConfig(type="claims", template="Q: {q}\nA: {text}\nTrue?", labels=("True", "False"),
                        group_field="g", key_field="key", id_field="id")
    # Group g0: three answers, two keys; a person says the claim of row 0 (key "a") is true, so no
    # claim with key "b" may be true, and row 1 (key "a" too) must be true with it.
    rows = [{"id": f"r{k}", "q": f"q{k % 8}", "text": f"answer {k} great" if k % 3 else f"answer {k} awful",
             "g": f"g{k % 8}", "key": "a" if k % 16 < 8 else "b"} for k in range(48)]
    fixed = {0: TRUE}
    out, _ = run_rows(as_input(rows, fixed, claims), dataclasses.replace(config(core={"max_tokens": 60}), task=claims))
    labels = {r: lab.label for r, _, lab in out}
    group = [r for r in range(48) if r % 8 == 0]
    assert labels[0] == "True"
    true_keys = {rows[r]["key"] for r in group if labels[r] == "True"}
    assert true_keys == {"a"}
    assert all(labels[r] == "True" for r in group if rows[r]["key"] == "a")


# --------------------------------------------------------------------------- reading corrections


def index_of(rows, selection=Selection()):
    shape = TaskShape(TASK)
    return build_index(MemorySource("tweets.jsonl", rows), selection, shape.check, "id")


def test_corrections_match_rows_by_id(tmp_path):
    path = tmp_path / "fix.jsonl"
    path.write_text('{"id": "t3", "label": "Negative"}\n{"id": "t0", "label": "positive"}\n')
    fixed = read_human_labels(str(path), index_of(tweet_rows(5)), ("positive", "negative"), "id")
    assert fixed.rows == {3: 1, 0: 0} and fixed.outside == 0 and len(fixed.digest) == 16
    path.write_text('{"id": "t0", "label": "positive"}\n{"id": "t3", "label": "negative"}\n')
    same = read_human_labels(str(path), index_of(tweet_rows(5)), ("positive", "negative"), "id")
    assert same.digest == fixed.digest  # the corrections, not the file's order


def test_an_id_not_in_the_data_is_an_error_naming_the_file_line_and_id(tmp_path):
    path = tmp_path / "fix.jsonl"
    path.write_text('{"id": "t0", "label": "positive"}\n{"id": "nope", "label": "negative"}\n'
                    '{"id": "nope2", "label": "negative"}\n')
    with pytest.raises(InputError, match=r"fix.jsonl:2: id 'nope' is not in tweets.jsonl \(and 1 more\)"):
        read_human_labels(str(path), index_of(tweet_rows(5)), ("positive", "negative"), "id")


def test_ids_outside_a_sample_are_left_out_and_counted(tmp_path):
    path = tmp_path / "fix.jsonl"
    path.write_text("".join(json.dumps({"id": f"t{k}", "label": "positive"}) + "\n" for k in range(10)))
    fixed = read_human_labels(str(path), index_of(tweet_rows(10), Selection(limit=4)), ("positive", "negative"), "id")
    assert sorted(fixed.rows) == [0, 1, 2, 3] and fixed.outside == 6


# --------------------------------------------------------------------------- resume


def test_resume_with_other_corrections_is_refused(tmp_path):
    path = tmp_path / "out.jsonl.checkpoint"
    Checkpoint(path, Config(), "abc", fixed="d1").save(RunState())
    Checkpoint(path, Config(), "abc", fixed="d1").load()
    with pytest.raises(InputError, match=r"the --fixed corrections changed .* resume with the same --fixed file"):
        Checkpoint(path, Config(), "abc", fixed="d2").load()
    with pytest.raises(InputError, match="the run had --fixed corrections, now it has none"):
        Checkpoint(path, Config(), "abc").load()
    Checkpoint(path, Config(), "abc").save(RunState())
    with pytest.raises(InputError, match="the run had no --fixed corrections, now it has"):
        Checkpoint(path, Config(), "abc", fixed="d1").load()


# --------------------------------------------------------------------------- bad input, before any model


CONFIG = """\
task:
  template: "Tweet: {text}\\nSentiment:"
  labels: [positive, negative]
  id_field: id
"""
DATA = '{"id": "a", "text": "great day"}\n{"id": "b", "text": "awful day"}\n{"id": "c", "text": "fine"}\n'


@pytest.mark.parametrize("case, config, corrections, expected", [
    ("no-id-field", CONFIG.replace("  id_field: id\n", ""), '{"id": "a", "label": "positive"}\n',
     ["--fixed matches corrections to rows by id: set task.id_field in c.yaml"]),
    ("missing-file", CONFIG, None, ["nope.jsonl: --fixed names no such file"]),
    ("unknown-id", CONFIG, '{"id": "a", "label": "positive"}\n{"id": "zz", "label": "negative"}\n',
     ["fix.jsonl:2: id 'zz' is not in data.jsonl"]),
    ("label-outside-the-set", CONFIG, '{"id": "a", "label": "neutral"}\n',
     ["fix.jsonl:1: label 'neutral' (id 'a') is not one of the config's labels (positive, negative)"]),
    ("no-label-field", CONFIG, '{"id": "a", "sentiment": "positive"}\n', ["fix.jsonl:1: field 'label' is missing"]),
    ("label-studio-other-control", CONFIG,
     '[{"id": 7, "data": {"id": "a", "text": "x"}, "annotations": [{"result": [{"type": "choices", '
     '"from_name": "sentiment", "value": {"choices": ["positive"]}}]}]}]',
     ["fix.json: item 1 (task 7): its annotations answer sentiment, not 'label'"]),
])
def test_bad_corrections_are_one_line_before_any_model_and_write_nothing(tmp_path, monkeypatch, case, config,
                                                                        corrections, expected):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input error")

    monkeypatch.setattr(loading, "load_backend", refuse)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(config)
    (tmp_path / "data.jsonl").write_text(DATA)
    name = "nope.jsonl"
    if corrections is not None:
        name = "fix.json" if corrections.startswith("[") else "fix.jsonl"
        (tmp_path / name).write_text(corrections)
    before = set(tmp_path.iterdir())
    result = CliRunner().invoke(app, ["label", "data.jsonl", "-c", "c.yaml", "-o", "out.jsonl", "--fixed", name])
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: error: "), result.stderr
    for part in expected:
        assert part in lines[0], lines[0]
    assert set(tmp_path.iterdir()) == before  # nothing written: no OUT, summary, checkpoint or lock


def test_the_dry_run_says_how_many_fixed_rows_are_demonstrations(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("a dry run loads no model"))
    root = Path(__file__).resolve().parents[1]
    gold = (root / "examples" / "tweets-64.gold.jsonl").read_text(encoding="utf-8").split("\n")[:40]
    (tmp_path / "fix.jsonl").write_text("\n".join(gold) + "\n")
    result = CliRunner().invoke(app, ["label", str(root / "examples" / "tweets-64.jsonl"), "-c",
                                      str(root / "configs" / "tweets-sentiment.yaml"), "--dry-run", "--fixed",
                                      str(tmp_path / "fix.jsonl")])
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("--fixed:"))
    assert line.startswith("--fixed: 40 rows keep a person's label; each core holds ")
    assert "(core.fixed_tokens caps them at 1,024 tokens); the others are kept in the output only" in line


def test_with_fixed_demonstrations_auto_averages_the_zero_shot_reading():
    rows = tweet_rows(40)
    fixed = {1: 1, 3: 0, 5: 1}
    auto = config(transfer={"zero_shot": "auto"})
    _, summary = run_rows(as_input(rows, fixed), auto)
    assert summary.zero_shot_averaged and summary.zero_shot_kappa is None
    assert "3 rows a person labelled are demonstrations" in summary.zero_shot_rule
    # Without corrections the same config decides by the readings' agreement.
    _, plain = run_rows(as_input(rows, {}), auto)
    assert plain.zero_shot_kappa is not None and "kappa" in plain.zero_shot_rule
    # Fixed rows that are no demonstrations (fixed_tokens 0) leave the rule as it was.
    _, held = run_rows(as_input(rows, fixed), config(transfer={"zero_shot": "auto"}, core={"fixed_tokens": 0}))
    assert held.zero_shot_kappa is not None
