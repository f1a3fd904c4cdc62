"""Class shares without gold (class_prior.py, class_shares.py) on synthetic readings whose true
shares are known."""

from __future__ import annotations

import math
import random

import pytest

from icm_cli.algorithm.class_prior import estimate, matching, uniform
from icm_cli.run.class_shares import SharesReport, decide, finish, not_applied


def readings(shares, rows, signal, seed):
    """Centred log-probabilities of rows drawn with `shares`: each row's true class gets `signal`
    more log-likelihood than the others, blurred by noise; centred on the sample's mean as batch
    calibration does (which by itself reads the classes as equally common)."""
    rng = random.Random(seed)
    raw = []
    for _ in range(rows):
        y = rng.choices(range(len(shares)), weights=shares)[0]
        raw.append([signal * (k == y) + rng.gauss(0, 1.0) for k in range(len(shares))])
    mean = [sum(r[k] for r in raw) / rows for k in range(len(shares))]
    out = []
    for r in raw:
        v = [a - m for a, m in zip(r, mean)]
        top = max(v)
        total = top + math.log(sum(math.exp(x - top) for x in v))
        out.append([x - total for x in v])
    return out


@pytest.mark.parametrize("shares", [(0.43, 0.40, 0.17), (0.7, 0.3)])
def test_estimated_shares_move_from_uniform_towards_the_data(shares):
    # Centred scores are not true likelihoods, so EM recovers part of the imbalance, not all of
    # it (0.17 reads as about 0.22 here): each share lands between uniform and the truth.
    prior = estimate(readings(shares, 3000, 3.0, 1))
    k = len(shares)
    for got, want in zip(prior.shares, shares):
        assert min(want, 1 / k) - 0.01 <= got <= max(want, 1 / k) + 0.01
    assert sorted(range(k), key=prior.shares.__getitem__) == sorted(range(k), key=shares.__getitem__)
    assert abs(prior.shares[-1] - 1 / k) > 0.05


@pytest.mark.parametrize("shares", [(0.5, 0.5), (1 / 3, 1 / 3, 1 / 3)])
def test_balanced_data_keeps_balanced_shares(shares):
    prior = estimate(readings(shares, 3000, 3.0, 1))
    for got, want in zip(prior.shares, shares):
        assert got == pytest.approx(want, abs=0.02)


@pytest.mark.parametrize("signal", [2.0, 3.0])
def test_the_rare_class_stops_being_over_predicted(signal):
    rows = readings((0.43, 0.40, 0.17), 2000, signal, 2)
    argmax = lambda v: max(range(len(v)), key=v.__getitem__)  # noqa: E731
    before = sum(argmax(r) == 2 for r in rows) / len(rows)
    prior = estimate(rows)
    after = sum(argmax(prior.apply(r)) == 2 for r in rows) / len(rows)
    assert after < before
    assert after <= 0.17 * 1.5  # the issue's bar for the minority's predicted share


def test_uniform_changes_nothing():
    r = [math.log(0.6), math.log(0.4)]
    assert uniform(2).apply(r) == pytest.approx(r)


def test_the_summary_warns_where_a_class_is_collapsed_or_inflated():
    report = finish(SharesReport(False, "", {"a": 0.45, "b": 0.40, "c": 0.15}, 256),
                    {"a": 300, "b": 100, "c": 200}, ["a", "b", "c"])
    assert report.labels == {"a": 0.5, "b": pytest.approx(0.1667, abs=1e-3), "c": pytest.approx(0.3333, abs=1e-3)}
    assert any("'b'" in w and "collapsed" in w for w in report.warnings)
    assert any("'c'" in w and "inflated" in w for w in report.warnings)
    assert not any("'a'" in w for w in report.warnings)


def test_only_on_applies_the_shares():
    assert not decide("auto", 3)[0] and not decide("auto", 2)[0]
    assert decide("on", 2)[0] and not decide("off", 3)[0]


def test_the_warnings_take_the_zero_shot_shares_where_there_are_some():
    report = SharesReport(False, "", {"a": 0.9, "b": 0.05, "c": 0.05}, 256,
                          zero_shot={"a": 0.45, "b": 0.40, "c": 0.15})
    report = finish(report, {"a": 300, "b": 100, "c": 200}, ["a", "b", "c"])
    assert any("'b'" in w and "collapsed" in w and "zero-shot" in w for w in report.warnings)
    assert any("'c'" in w and "inflated" in w for w in report.warnings)
    assert len(report.warnings) == 2


def _argmax(v):
    return max(range(len(v)), key=v.__getitem__)


@pytest.mark.parametrize("shares, signal", [((0.40, 0.45, 0.15), 1.0), ((0.7, 0.3), 0.5), ((0.1, 0.1, 0.8), 3.0)])
def test_stated_shares_are_what_the_labels_take(shares, signal):
    rows = readings(shares, 512, signal, 3)
    before = [sum(_argmax(r) == y for r in rows) / len(rows) for y in range(len(shares))]
    prior = matching(rows, shares)
    after = [sum(_argmax(prior.apply(r)) == y for r in rows) / len(rows) for y in range(len(shares))]
    assert max(abs(a - b) for a, b in zip(before, shares)) > 0.1  # centring alone missed them
    assert after == pytest.approx(list(shares), abs=2 / len(rows))
    assert matching(rows, shares) == prior  # no randomness


def test_matching_to_shares_the_labels_already_have_changes_no_label():
    rows = readings((0.5, 0.5), 400, 2.0, 5)
    have = [sum(_argmax(r) == y for r in rows) / len(rows) for y in range(2)]
    prior = matching(rows, have)
    assert [_argmax(prior.apply(r)) for r in rows] == [_argmax(r) for r in rows]


def test_stated_shares_are_always_applied_and_are_the_warnings_reference():
    assert decide("off", 3, {"a": 0.4, "b": 0.45, "c": 0.15})[0]
    report = SharesReport(True, "", {"a": 0.3, "b": 0.3, "c": 0.4}, 256, zero_shot={"a": 0.3, "b": 0.4, "c": 0.3},
                          stated={"a": 0.1, "b": 0.45, "c": 0.45})
    report = finish(report, {"a": 300, "b": 200, "c": 100}, ["a", "b", "c"])
    assert any("'a'" in w and "inflated" in w and "stated" in w for w in report.warnings)
    assert any("'c'" in w and "collapsed" in w and "stated" in w for w in report.warnings)


def test_stated_shares_with_nothing_to_act_on_say_so():
    from types import SimpleNamespace

    run = SimpleNamespace(config=SimpleNamespace(task=SimpleNamespace(class_shares={"b": 0.25, "a": 0.75})),
                          shape=SimpleNamespace(label_words=("a", "b")))
    report = not_applied(run, uncalibrated=False)
    assert not report.applied and "search itself" in report.reason
    assert report.stated == {"a": 0.75, "b": 0.25}


@pytest.mark.parametrize("extra, shown", [
    ({"stated": {"a": 0.3, "b": 0.7}, "applied": True}, "stated a 30%, b 70% (matched)"),
    ({"estimated": {"a": 0.4, "b": 0.6}}, "estimated a 40%, b 60% (not applied)"),
    ({"estimated": {}, "reason": "transfer.class_prior: on not applied: every row"}, "no estimate (transfer.class_prior: on"),
])
def test_the_summary_table_names_what_the_labels_were_held_to(extra, shown):
    from rich.console import Console
    from rich.table import Table

    from icm_cli.commands.label_report import _class_shares

    shares = {"labels": {"a": 0.5, "b": 0.5}, "estimated": {"a": 0.4, "b": 0.6}, "applied": False, "reason": "", **extra}
    table = Table(show_header=False)
    table.add_column()
    table.add_column()
    _class_shares(table, shares)
    console = Console(width=300, record=True)
    console.print(table)
    assert shown in console.export_text()
