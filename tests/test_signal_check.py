"""The signal check's parts that need no model: the scramble, kappa and its interval, and the
verdict the figures give (signal_check.judge). The check on real runs is in test_cli_model.py."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from icm_cli.foundation.agreement import bootstrap_interval, cohen_kappa
from icm_cli.run.signal_check import Readings, judge, scramble, scrambles_per_row


def test_scramble_keeps_the_texts_shape_and_letters_and_is_seeded():
    text = "Loved it!! 10/10, would go again :) @bob"
    mixed = scramble(text, 3)
    assert mixed != text and len(mixed) == len(text)
    assert sorted(mixed) == sorted(text)
    assert [c for c in mixed if not c.isalpha()] == [c for c in text if not c.isalpha()]
    assert all(a.isalpha() == b.isalpha() for a, b in zip(text, mixed))
    assert scramble(text, 3) == mixed and scramble(text, 4) != mixed


def test_kappa_is_one_for_agreement_zero_for_chance_and_zero_for_one_label():
    assert cohen_kappa([0, 1, 0, 1], [0, 1, 0, 1]) == 1.0
    assert cohen_kappa([0, 1, 0, 1], [1, 0, 1, 0]) == -1.0
    assert cohen_kappa([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
    rng = random.Random(0)
    a = [rng.randrange(2) for _ in range(4000)]
    b = [rng.randrange(2) for _ in range(4000)]
    assert abs(cohen_kappa(a, b)) < 0.05


def test_bootstrap_interval_holds_the_value_and_narrows_with_more_items():
    rng = random.Random(1)
    values = [rng.gauss(0, 1) for _ in range(400)]
    low, high = bootstrap_interval(lambda idx: sum(values[i] for i in idx) / len(idx), len(values), seed=2)
    mean = sum(values) / len(values)
    assert low < mean < high and high - low < 0.3
    low2, high2 = bootstrap_interval(lambda idx: sum(values[i] for i in idx) / len(idx), 40, seed=2)
    assert high2 - low2 > high - low


def lp(logodds: float) -> list[float]:
    return [-math.log1p(math.exp(-logodds)), -math.log1p(math.exp(logodds))]


def readings(n: int, *, meaning: float, noise: float, zero_shot_follows: float, balance: float = 0.5,
             seed: int = 0) -> Readings:
    """Synthetic readings: `meaning` is how much of a row's reading its words carry (gone when
    scrambled), `noise` the part its letters alone carry (kept when scrambled)."""
    rng = random.Random(seed)
    mine, mixed, zs = [], [], []
    for _ in range(n):
        concept = rng.gauss(0, 1) + math.log(balance / (1 - balance))
        letters = rng.gauss(0, 1)
        mine.append(lp(meaning * concept + noise * letters))
        mixed.append(lp(noise * rng.gauss(0, 1)))
        zs.append(lp(zero_shot_follows * concept + rng.gauss(0, 0.5)))
    labels = [0 if s[0] > s[1] else 1 for s in mine]
    return Readings(labels, mine, mixed, zs)


def test_readings_that_follow_the_words_and_agree_with_zero_shot_are_signal():
    report = judge(readings(256, meaning=2.0, noise=0.3, zero_shot_follows=1.5), 2, seed=0)
    assert report.verdict == "signal", report
    assert {f.name for f in report.figures} >= {"content_ratio", "zero_shot_kappa", "majority_share"}


def test_readings_that_vary_as_much_on_shuffled_letters_are_none():
    report = judge(readings(256, meaning=0.0, noise=1.0, zero_shot_follows=0.0), 2, seed=0)
    assert report.verdict == "none", report
    assert "shuffled letters" in report.reason


def test_readings_that_follow_the_words_but_not_zero_shot_are_weak():
    report = judge(readings(256, meaning=2.0, noise=0.3, zero_shot_follows=0.0), 2, seed=0)
    assert report.verdict == "weak", report


def zero_shot_alone(r: Readings) -> Readings:
    """The readings of a run whose labels are the zero-shot reading alone: the reading judged is
    zero-shot itself, so it agrees with it by construction."""
    return dataclasses.replace(r, mine=r.zero_shot, labels=[0 if s[0] > s[1] else 1 for s in r.zero_shot],
                               zero_shot_alone=True)


@pytest.mark.parametrize("meaning, noise, verdict", [(2.0, 0.3, "signal"), (0.85, 1.0, "weak"), (0.0, 1.0, "none")])
def test_labels_that_are_the_zero_shot_reading_are_judged_on_their_content_without_a_kappa(meaning, noise, verdict):
    r = readings(256, meaning=meaning, noise=noise, zero_shot_follows=0.0)
    # The judged reading follows the words as `mine` does, and is zero-shot's.
    r = dataclasses.replace(r, zero_shot=r.mine)
    report = judge(zero_shot_alone(r), 2, seed=0)
    assert report.verdict == verdict, report
    assert "zero_shot_kappa" not in {f.name for f in report.figures}
    if verdict != "none":
        assert "the labels are the model's zero-shot reading" in report.reason
    # The same readings judged as a many-shot reading get a kappa of 1: the figure left out
    # would say nothing.
    kept = judge(dataclasses.replace(r, labels=[0 if s[0] > s[1] else 1 for s in r.mine]), 2, seed=0)
    assert next(f.value for f in kept.figures if f.name == "zero_shot_kappa") == 1.0


def test_one_label_for_nearly_every_row_is_none_with_a_warning():
    report = judge(readings(256, meaning=2.0, noise=0.3, zero_shot_follows=1.5, balance=0.999), 2, seed=0)
    assert report.verdict == "none"
    assert any("one label takes" in w for w in report.warnings)


@pytest.mark.parametrize("seed", range(5))
def test_the_verdict_on_noise_is_stable_across_samples(seed):
    assert judge(readings(256, meaning=0.0, noise=1.0, zero_shot_follows=0.0, seed=seed), 2, seed).verdict == "none"


def three_readers(n: int, *, second_core_follows: float, seed: int = 0) -> Readings:
    """Two cores and a poor zero-shot reading of the same rows, each with its own noise: the
    first core reads the concept well, zero-shot barely; the second core reads the concept as
    well as the first (`second_core_follows` 1.0) or something else (0.0: a drifted search)."""
    rng = random.Random(seed)
    first, second, mixed, zs = [], [], [], []
    for _ in range(n):
        concept, other = rng.gauss(0, 1), rng.gauss(0, 1)
        first.append(lp(3.0 * concept + rng.gauss(0, 1.5)))
        follows = second_core_follows
        second.append(lp(3.0 * (follows * concept + (1 - follows) * other) + rng.gauss(0, 1.5)))
        mixed.append(lp(0.3 * rng.gauss(0, 1)))
        zs.append(lp(0.6 * concept + rng.gauss(0, 1.5)))
    mine = [[(a + b) / 2 for a, b in zip(x, y)] for x, y in zip(first, second)]
    labels = [0 if s[0] > s[1] else 1 for s in mine]
    return Readings(labels, mine, mixed, zs, cores=[first, second])


def test_two_cores_that_read_the_same_departure_from_a_poor_zero_shot_are_signal():
    report = judge(three_readers(256, second_core_follows=1.0), 2, seed=0)
    figures = {f.name: f.value for f in report.figures}
    assert figures["zero_shot_kappa"] < 0.4  # one core alone would be `weak`
    assert figures["cores_kappa"] > 0.4 and figures["cores_margin"] > 0
    assert report.verdict == "signal", report
    assert "two cores agree" in report.reason
    alone = judge(dataclasses.replace(three_readers(256, second_core_follows=1.0), cores=[]), 2, seed=0)
    assert alone.verdict == "weak"


def test_two_cores_where_one_drifted_stay_weak():
    report = judge(three_readers(256, second_core_follows=0.0), 2, seed=0)
    between = next(f for f in report.figures if f.name == "cores_kappa")
    assert between.interval[0] <= 0  # the drifted core reads alone: no agreement beyond chance
    assert report.verdict == "weak", report


def test_two_cores_that_each_read_worse_than_zero_shot_stay_weak():
    """Each core half drifted, each its own way: they agree with each other less than zero-shot
    agrees with either, beyond sampling."""
    rng = random.Random(3)
    first, second, mixed, zs = [], [], [], []
    for _ in range(256):
        concept, one, two = rng.gauss(0, 1), rng.gauss(0, 1), rng.gauss(0, 1)
        first.append(lp(3.0 * (0.5 * concept + 0.5 * one) + rng.gauss(0, 0.5)))
        second.append(lp(3.0 * (0.5 * concept + 0.5 * two) + rng.gauss(0, 0.5)))
        mixed.append(lp(0.3 * rng.gauss(0, 1)))
        zs.append(lp(3.0 * concept + rng.gauss(0, 1.5)))
    mine = [[(a + b) / 2 for a, b in zip(x, y)] for x, y in zip(first, second)]
    labels = [0 if s[0] > s[1] else 1 for s in mine]
    report = judge(Readings(labels, mine, mixed, zs, cores=[first, second]), 2, seed=0)
    figures = {f.name: f for f in report.figures}
    assert figures["cores_kappa"].interval[0] > 0 and figures["cores_margin"].interval[1] < 0
    assert report.verdict == "weak", report


def heavy_tailed_noise(n: int, scrambles: int, seed: int) -> Readings:
    """Readings that the words do not move (a row and its scrambles are alike), with the heavy
    tails real log-odds have (Student's t, 3 degrees of freedom)."""
    rng = random.Random(seed)

    def draw() -> list[float]:
        return lp(rng.gauss(0, 1) / math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3))

    mine = [draw() for _ in range(n)]
    mixed = [[draw() for _ in range(n)] for _ in range(scrambles)]
    labels = [0 if s[0] > s[1] else 1 for s in mine]
    return Readings(labels, mine, mixed[0], [draw() for _ in range(n)], more_scrambled=mixed[1:])


def test_a_small_sample_reads_several_scrambles_so_noise_is_none():
    """On 32 rows one scramble each lets heavy-tailed noise clear the content floor now and then
    (a real run on random letters did); the scrambles the check reads at that size keep it none."""
    assert scrambles_per_row(32) == 4 and scrambles_per_row(64) == 2 and scrambles_per_row(256) == 1

    def not_none(scrambles: int) -> int:
        return sum(judge(heavy_tailed_noise(32, scrambles, seed), 2, seed).verdict != "none" for seed in range(40))

    assert not_none(scrambles_per_row(32)) <= 1
    assert not_none(1) >= 3
