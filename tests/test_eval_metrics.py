import json

import pytest

from icm_cli.foundation.metrics import Agreement, ClassStats, Slice, accuracy_by_confidence, accuracy_by_group, compare_label_sets, compute_agreement, normalize_label


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (1, "true"),
        (0, "false"),
        (1.0, "true"),
        (0.0, "false"),
        ("1", "true"),
        ("0", "false"),
        ("true", "true"),
        ("True", "true"),
        ("FALSE", "false"),
        ("  true \n", "true"),
        (" 0 ", "false"),
        ("Positive", "positive"),
        ("  NEGATIVE  ", "negative"),
        (2, "2"),
        ("2", "2"),
        (2.0, "2"),
    ],
)
def test_normalize_label(raw: object, expected: str) -> None:
    assert normalize_label(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", [1], {"a": 1}])
def test_normalize_label_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        normalize_label(raw)


def test_mixed_gold_formats_agree_after_normalization() -> None:
    gold_raw = {"a": True, "b": 0, "c": "1", "d": "FALSE", "e": 1.0}
    pred_raw = {"a": "true", "b": False, "c": 1, "d": "0", "e": " True "}
    gold = {k: normalize_label(v) for k, v in gold_raw.items()}
    pred = {k: normalize_label(v) for k, v in pred_raw.items()}
    result = compute_agreement(pred, gold)
    assert result.accuracy == 1.0
    assert result.labels == ["false", "true"]


def _pairs(*groups: tuple[str, str, int]) -> tuple[dict[str, str], dict[str, str]]:
    """Build pred/gold dicts from (gold, pred, count) groups with fresh ids."""
    pred: dict[str, str] = {}
    gold: dict[str, str] = {}
    for g, p, count in groups:
        for _ in range(count):
            key = str(len(gold))
            gold[key] = g
            pred[key] = p
    return pred, gold


def test_textbook_kappa() -> None:
    # Wikipedia "Cohen's kappa" worked example: 50 items, 20 yes/yes, 5 yes/no, 10 no/yes,
    # 15 no/no -> p_o = 0.7, p_e = 0.5, kappa = 0.4.
    pred, gold = _pairs(("yes", "yes", 20), ("yes", "no", 5), ("no", "yes", 10), ("no", "no", 15))
    result = compute_agreement(pred, gold)
    assert result.n == 50
    assert result.accuracy == pytest.approx(0.7)
    assert result.kappa == pytest.approx(0.4)
    assert result.confusion == {"no": {"no": 15, "yes": 10}, "yes": {"no": 5, "yes": 20}}


def test_per_class_hand_computed() -> None:
    # gold yes: 25, pred yes: 30, tp(yes) = 20; gold no: 25, pred no: 20, tp(no) = 15
    pred, gold = _pairs(("yes", "yes", 20), ("yes", "no", 5), ("no", "yes", 10), ("no", "no", 15))
    stats = compute_agreement(pred, gold).per_class
    assert stats["yes"].precision == pytest.approx(20 / 30)
    assert stats["yes"].recall == pytest.approx(20 / 25)
    assert stats["yes"].f1 == pytest.approx(2 * (2 / 3) * 0.8 / (2 / 3 + 0.8))
    assert stats["yes"].support == 25
    assert stats["no"].precision == pytest.approx(15 / 20)
    assert stats["no"].recall == pytest.approx(15 / 25)
    assert stats["no"].support == 25


def test_three_classes_confusion_includes_zeros_and_undefined_scores_are_zero() -> None:
    gold = {"1": "a", "2": "a", "3": "b", "4": "c"}
    pred = {"1": "a", "2": "b", "3": "b", "4": "b"}
    result = compute_agreement(pred, gold)
    assert result.labels == ["a", "b", "c"]
    assert result.confusion == {
        "a": {"a": 1, "b": 1, "c": 0},
        "b": {"a": 0, "b": 1, "c": 0},
        "c": {"a": 0, "b": 1, "c": 0},
    }
    assert result.accuracy == pytest.approx(0.5)
    # Never predicted: precision undefined -> 0.
    assert result.per_class["c"] == ClassStats(precision=0.0, recall=0.0, f1=0.0, support=1)
    # p_e = (2*1 + 1*3 + 1*0) / 16 = 5/16
    assert result.kappa == pytest.approx((0.5 - 5 / 16) / (1 - 5 / 16))


def test_predicted_class_absent_from_gold_has_zero_support() -> None:
    result = compute_agreement({"1": "x", "2": "y"}, {"1": "x", "2": "x"})
    assert result.per_class["y"].support == 0
    assert result.per_class["y"].recall == 0.0
    assert result.confusion["y"] == {"x": 0, "y": 0}


def test_kappa_is_zero_when_expected_agreement_is_one() -> None:
    result = compute_agreement({"1": "a", "2": "a"}, {"1": "a", "2": "a"})
    assert result.accuracy == 1.0
    assert result.kappa == 0.0


def test_perfect_disagreement_gives_negative_kappa() -> None:
    result = compute_agreement({"1": "a", "2": "b"}, {"1": "b", "2": "a"})
    assert result.accuracy == 0.0
    assert result.kappa == pytest.approx(-1.0)


def test_coverage_counts_and_examples() -> None:
    gold = {str(i): "a" for i in range(10)}
    pred = {str(i): "a" for i in range(3, 10)} | {"x1": "a", "x2": "a"}
    result = compute_agreement(pred, gold)
    cov = result.coverage
    assert result.n == 7
    assert (cov.gold_total, cov.pred_total) == (10, 9)
    assert (cov.missing_in_pred, cov.missing_in_gold) == (3, 2)
    assert cov.missing_in_pred_examples == ("0", "1", "2")
    assert cov.labelled_fraction == 0.7
    assert cov.missing_in_gold_examples == ("x1", "x2")


def test_coverage_examples_are_capped() -> None:
    gold = {str(i): "a" for i in range(100)}
    cov = compute_agreement({"0": "a"}, gold).coverage
    assert cov.missing_in_pred == 99
    assert 0 < len(cov.missing_in_pred_examples) < 99


def test_no_common_ids_raises() -> None:
    with pytest.raises(ValueError):
        compute_agreement({"1": "a"}, {"2": "a"})


def test_bootstrap_ci_contains_accuracy_and_is_deterministic() -> None:
    pred, gold = _pairs(("yes", "yes", 60), ("yes", "no", 15), ("no", "yes", 10), ("no", "no", 15))
    first = compute_agreement(pred, gold, seed=7)
    again = compute_agreement(pred, gold, seed=7)
    low, high = first.ci95
    assert low < first.accuracy < high
    assert first.ci95 == again.ci95
    # The CI is discrete (multiples of 1/n), so compare several seeds rather than one pair.
    assert len({compute_agreement(pred, gold, seed=s, n_bootstrap=50).ci95 for s in range(10)}) > 1
    # Normal approximation for p = 0.75, n = 100: half-width ~ 1.96 * 0.0433 = 0.085.
    assert 0.06 < (high - low) / 2 < 0.11
    assert 0.0 <= low and high <= 1.0


def test_bootstrap_ci_is_degenerate_when_all_correct() -> None:
    result = compute_agreement({"1": "a", "2": "b"}, {"1": "a", "2": "b"})
    assert result.ci95 == (1.0, 1.0)


def test_to_json_shape_and_serializable() -> None:
    pred, gold = _pairs(("yes", "yes", 3), ("no", "yes", 1))
    result = compute_agreement(pred | {"extra": "no"}, gold)
    assert isinstance(result, Agreement)
    data = json.loads(json.dumps(result.to_json()))
    assert {"n", "accuracy", "ci95", "kappa", "per_class", "confusion", "coverage"} <= data.keys()
    assert data["n"] == 4
    assert data["accuracy"] == 0.75
    assert isinstance(data["ci95"], list) and len(data["ci95"]) == 2
    assert data["per_class"]["yes"] == {"precision": 0.75, "recall": 1.0, "f1": pytest.approx(6 / 7), "support": 3}
    assert data["confusion"] == {"no": {"no": 0, "yes": 1}, "yes": {"no": 0, "yes": 3}}
    assert {"missing_in_pred", "missing_in_gold", "gold_total", "pred_total"} <= data["coverage"].keys()
    assert data["coverage"]["missing_in_gold"] == 1
    assert data["coverage"]["pred_total"] == 5


def test_compare_label_sets_counts_whole_files() -> None:
    gold = {"1": "positive", "2": "negative", "3": "negative", "4": "neutral"}
    pred = {"1": "positive", "2": "pos", "3": "pos", "9": "other"}  # 4 unlabelled, 9 not in gold
    sets = compare_label_sets(pred, gold)
    assert sets.pred_only == {"other": 1, "pos": 2}
    assert sets.gold_only == {"negative": 2, "neutral": 1}
    assert (sets.pred_labels, sets.gold_labels) == (("other", "pos", "positive"), ("negative", "neutral", "positive"))
    assert not sets.disjoint
    assert compare_label_sets({"1": "positive"}, {"1": "true"}).disjoint
    # One wrong prediction on the only matched id is not a vocabulary mismatch.
    assert not compare_label_sets({"1": "positive"}, {"1": "negative", "2": "positive"}).disjoint


def test_accuracy_by_confidence_hand_computed() -> None:
    gold = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "x"}
    pred = {"a": "x", "b": "y", "c": "y", "d": "x", "extra": "x"}  # e unlabelled, extra not in gold
    confidence = {"a": 0.95, "b": 0.9, "c": 0.7, "d": 0.5, "extra": 1.0}
    rows = accuracy_by_confidence(pred, gold, confidence, [0.0, 0.7, 0.9, 0.95, 0.96])
    assert [r.threshold for r in rows] == [0.0, 0.7, 0.9, 0.95, 0.96]
    assert [(r.kept.n, r.kept.correct) for r in rows] == [(4, 2), (3, 2), (2, 1), (1, 1), (0, 0)]
    assert [r.coverage for r in rows] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert rows[1].kept.accuracy == pytest.approx(2 / 3)
    assert rows[4].kept == Slice(0, 0, None, None)
    low, high = rows[0].kept.ci95
    assert low <= 0.5 <= high


def test_accuracy_by_confidence_matches_filtering_each_cut_off_and_ties_are_kept() -> None:
    # One sort and a binary search per cut-off must keep exactly the ids a filter keeps, ties
    # with the cut-off included.
    import random

    rng = random.Random(5)
    gold = {str(i): rng.choice("xy") for i in range(500)}
    pred = {i: rng.choice("xy") for i in gold if rng.random() < 0.9}
    confidence = {i: rng.choice((0.5, 0.6, 0.75, 0.9, rng.random())) for i in pred}
    cuts = [0.0, 0.5, 0.6, 0.61, 0.75, 0.9, 0.99, 1.0]
    for row, t in zip(accuracy_by_confidence(pred, gold, confidence, cuts), cuts):
        kept = [i for i in gold if i in pred and confidence[i] >= t]
        assert (row.kept.n, row.kept.correct) == (len(kept), sum(pred[i] == gold[i] for i in kept))
        assert row.coverage == len(kept) / len(pred)


def test_accuracy_by_group() -> None:
    gold = {"1": "x", "2": "x", "3": "y", "4": "y"}
    pred = {"1": "x", "2": "y", "3": "y", "4": "y"}
    groups = {"1": "core", "2": "transfer", "3": "transfer", "4": "transfer"}
    result = accuracy_by_group(pred, gold, groups)
    assert list(result) == ["core", "transfer"]
    assert (result["core"].n, result["core"].accuracy) == (1, 1.0)
    assert (result["transfer"].n, result["transfer"].correct) == (3, 2)
    assert json.loads(json.dumps(result["transfer"].to_json()))["accuracy"] == pytest.approx(2 / 3)
