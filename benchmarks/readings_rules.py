"""Score ways of combining a run's readings against gold, from readings_study.py's records.

Every rule reads only what a run has without gold (the readings, a seeded calibration sample);
gold is read here, after, to score them. Prints one table: per rule, accuracy per seed, mean,
worst, and the predicted share of each class.

    python benchmarks/readings_rules.py runs/study/two-s*.json --gold runs/study/two-1432.gold.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from icm_cli.foundation.agreement import cohen_kappa  # noqa: E402
from icm_cli.run.signal_check import two_cores  # noqa: E402

CALIBRATION = 512
CHECK = 256


def log_softmax(v: Sequence[float]) -> list[float]:
    top = max(v)
    total = top + math.log(sum(math.exp(x - top) for x in v))
    return [x - total for x in v]


def argmax(v: Sequence[float]) -> int:
    return max(range(len(v)), key=lambda k: v[k])


class Study:
    """One record: per row, per reading (cores..., zero-shot), centred calibrated log-probs."""

    def __init__(self, path: Path, gold: dict[str, str]):
        d = json.loads(path.read_text())
        self.seed = d["seed"]
        self.labels = d["labels"]
        self.cores = d["cores"]
        self.k = len(d["cores"])
        ids = d["ids"]
        self.gold = [self.labels.index(gold[d["row_ids"][i]]) for i in ids]
        raw = d["raw"]  # row -> reading -> label
        rng = random.Random(self.seed)
        self.sample = sorted(rng.sample(range(len(ids)), min(CALIBRATION, len(ids))))
        self.check = sorted(random.Random(self.seed + 7919).sample(self.sample, min(CHECK, len(self.sample))))
        readings = len(raw[0])
        self.centred = []
        for c in range(readings):
            mean = [sum(raw[i][c][y] for i in self.sample) / len(self.sample) for y in range(len(self.labels))]
            self.centred.append([log_softmax([v - m for v, m in zip(raw[i][c], mean)]) for i in range(len(ids))])
        self.raw = raw
        self.d = d

    @property
    def zero(self) -> list[list[float]]:
        return self.centred[-1]

    def core(self, c: int) -> list[list[float]]:
        return self.centred[c]

    def cost(self, cores: int, zero: bool) -> tuple[int, float]:
        """Tokens and seconds of a run with the first `cores` cores (reads prorated)."""
        search = sum(c["tokens"] for c in self.cores[:cores])
        seconds = sum(c["seconds"] for c in self.cores[:cores])
        per_read = self.d["read_tokens"] / (len(self.d["ids"]) * (self.k + 1))
        reads = len(self.d["ids"]) * (cores + int(zero)) * per_read
        read_s = self.d["read_seconds"] * (cores + int(zero)) / (self.k + 1)
        return int(search + reads), seconds + read_s


def mean_reading(readings: Sequence[list[list[float]]], weights: Sequence[float] | None = None) -> list[list[float]]:
    weights = weights or [1.0] * len(readings)
    total = sum(weights)
    n, labels = len(readings[0]), len(readings[0][0])
    return [log_softmax([sum(w * r[i][y] for w, r in zip(weights, readings)) / total for y in range(labels)])
            for i in range(n)]


def kappa(a: list[list[float]], b: list[list[float]], rows: Sequence[int]) -> float:
    return cohen_kappa([argmax(a[i]) for i in rows], [argmax(b[i]) for i in rows])


def em_prior(posteriors: list[list[float]], rows: Sequence[int], rounds: int = 100, strength: float = 0.0) -> list[float]:
    """Saerens-Latinne-Decaestecker: the class shares that make the calibrated posteriors
    consistent with themselves, as log-priors (uniform = 0); `strength`: pseudo-rows of a
    uniform prior (a Dirichlet) that keep a thin sample from running away."""
    labels = len(posteriors[0])
    prior = [1 / labels] * labels
    for _ in range(rounds):
        counts = [strength / labels] * labels
        for i in rows:
            p = [math.exp(v) * prior[y] * labels for y, v in enumerate(posteriors[i])]
            total = sum(p)
            for y in range(labels):
                counts[y] += p[y] / total
        prior = [c / (len(rows) + strength) for c in counts]
    return [math.log(p * labels) for p in prior]


def with_prior(readings: list[list[float]], log_prior: Sequence[float]) -> list[list[float]]:
    return [log_softmax([v + p for v, p in zip(r, log_prior)]) for r in readings]


# ---- rules: Study -> final readings ------------------------------------------------------------


def zero_shot(s: Study):
    return s.zero


def default_rule(s: Study, agrees: float = 0.8):
    many = s.core(0)
    if kappa(many, s.zero, s.check) >= agrees:
        return many
    return mean_reading([many, s.zero])


def always_average(s: Study):
    return mean_reading([s.core(0), s.zero])


def cores_then_zero(n: int, zero_weight: float = 1.0):
    def rule(s: Study):
        return mean_reading([*(s.core(c) for c in range(n)), s.zero], [1.0] * n + [zero_weight * n])
    rule.__name__ = f"{n} cores avg, then 1:1 with zero-shot" if zero_weight == 1 else f"{n} cores + zero-shot w{zero_weight}"
    return rule


def equal_readings(n: int):
    def rule(s: Study):
        return mean_reading([*(s.core(c) for c in range(n)), s.zero])
    rule.__name__ = f"{n} cores + zero-shot, equal weights"
    return rule


def agreement_weighted(n: int, floor: float = 0.0):
    """Each reading weighted by its mean kappa with the other readings on the check sample."""
    def rule(s: Study):
        readings = [*(s.core(c) for c in range(n)), s.zero]
        weights = []
        for a in range(len(readings)):
            ks = [kappa(readings[a], readings[b], s.check) for b in range(len(readings)) if b != a]
            weights.append(max(floor, sum(ks) / len(ks)))
        if sum(weights) <= 0:
            weights = [1.0] * len(readings)
        return mean_reading(readings, weights)
    rule.__name__ = f"{n} cores + zero-shot, weighted by agreement"
    return rule


def pairwise_weighted(s: Study, readings: Sequence[list[list[float]]]) -> list[list[float]]:
    """Each reading weighted by its mean kappa with the others, each kappa floored at 0 (as
    `core.count: auto` weighs them: run/second_core.weigh)."""
    weights = []
    for a in range(len(readings)):
        ks = [max(0.0, kappa(readings[a], readings[b], s.check)) for b in range(len(readings)) if b != a]
        weights.append(sum(ks) / len(ks))
    return mean_reading(readings, weights if sum(weights) > 0 else None)


def second_core_on_departure(threshold: float = 0.45, first: int = 0, second: int = 1, confirm: bool = False):
    """`core.count: auto`: core `first`; core `second` too only where the first's reading departs
    from zero-shot (its kappa on the check sample below `threshold`), then the three readings
    weighted by their agreement. Its cost is one core's, or two cores' on the runs that departed.
    With `confirm` (today's rule, run/second_core.py): where the two cores do not confirm their
    departure (TwoCores.confirms on the check sample), the zero-shot reading alone."""
    def rule(s: Study):
        many = s.core(first)
        if kappa(many, s.zero, s.check) >= threshold:
            return many if kappa(many, s.zero, s.check) >= 0.8 else mean_reading([many, s.zero])
        if confirm:
            a, b, z = ([argmax(r[i]) for i in s.check] for r in (many, s.core(second), s.zero))
            if not two_cores(a, b, z, s.seed).confirms():
                return s.zero
        return pairwise_weighted(s, [many, s.core(second), s.zero])
    rule.__name__ = (f"core.count auto, confirmed or zero-shot (cores {first}, then {second})" if confirm
                     else f"core.count auto (cores {first}, then {second}; < {threshold:g})")
    rule.cores = lambda s: 1 if kappa(s.core(first), s.zero, s.check) >= threshold else 2
    return rule


def content_weighted(n: int):
    """The cores' and zero-shot readings, each weighted by how much more it varies on the rows than
    on their letters shuffled (its content ratio, less 1: a reading the words do not move gets
    nothing; gold-free, the check's own figure). The hope: a drifted core varies less with the
    words. Measured and rejected for `icm label` (README, "One run is enough"): on a fresh draw
    the drifted core had the highest ratio."""
    def rule(s: Study):
        readings = [*(s.core(c) for c in range(n)), s.zero]
        weights = [max(0.0, content(s, c if c < n else s.k) - 1) for c in range(n + 1)]
        return mean_reading(readings, weights if sum(weights) > 0 else None)
    rule.__name__ = f"{n} cores + zero-shot, weighted by content ratio - 1"
    return rule


def prior_adjusted(rule: Callable, strength: float = 0.0):
    def adjusted(s: Study):
        combined = rule(s)
        return with_prior(combined, em_prior(combined, s.sample, strength=strength))
    adjusted.__name__ = f"{getattr(rule, '__name__', 'rule')} + EM prior" + (f" (s={strength:g})" if strength else "")
    return adjusted


def score(s: Study, readings: list[list[float]]) -> tuple[float, list[float], list[float]]:
    labels = len(s.labels)
    pred = [argmax(r) for r in readings]
    acc = sum(p == g for p, g in zip(pred, s.gold)) / len(pred)
    recall = [sum(p == g == y for p, g in zip(pred, s.gold)) / max(1, s.gold.count(y)) for y in range(labels)]
    shares = [pred.count(y) / len(pred) for y in range(labels)]
    return acc, recall, shares


def spread(readings: Sequence[Sequence[float]]) -> float:
    """How far readings vary across rows: the root mean over labels of each label's variance."""
    labels = len(readings[0])
    total = 0.0
    for y in range(labels):
        col = [r[y] for r in readings]
        m = sum(col) / len(col)
        total += sum((v - m) ** 2 for v in col) / len(col)
    return math.sqrt(total / labels)


def content(s: Study, c: int) -> float:
    """Reading c's spread on the sample's rows over its spread on their letters shuffled."""
    where = {i: k for k, i in enumerate(s.d["ids"])}
    rows = [s.centred[c][where[i]] for i in s.d["scrambled_ids"]]
    mixed_raw = [r[c] for r in s.d["scrambled"]]
    centre = [sum(s.raw[i][c][y] for i in s.sample) / len(s.sample) for y in range(len(s.labels))]
    mixed = [log_softmax([v - m for v, m in zip(r, centre)]) for r in mixed_raw]
    return spread(rows) / max(spread(mixed), 1e-9)


def uncentred_shares(s: Study) -> list[tuple[str, list[float]]]:
    """Places a class's share could be read from without batch centring (which reads the classes
    as equally common): each reading's raw argmax, and the rows where every centred reading picks
    the same label (if the readings' false alarms were independent, a rare class would be rarer
    among them); beside them, the true shares of those agreed rows."""
    labels = len(s.labels)
    names = [f"core{c}" for c in range(s.k)] + ["zero"]
    out = []
    for c, name in enumerate(names):
        pred = [argmax(row[c]) for row in s.raw]
        out.append((f"{name} raw (uncalibrated)", [pred.count(y) / len(pred) for y in range(labels)]))
    picks = [[argmax(r[i]) for r in s.centred] for i in range(len(s.gold))]
    agreed = [i for i, p in enumerate(picks) if len(set(p)) == 1]
    if agreed:
        out.append((f"rows every reading agrees on ({len(agreed)})",
                    [sum(picks[i][0] == y for i in agreed) / len(agreed) for y in range(labels)]))
        out.append(("  their true shares", [sum(s.gold[i] == y for i in agreed) / len(agreed) for y in range(labels)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--gold", type=Path, required=True)
    args = ap.parse_args()
    gold = {json.loads(line)["id"]: json.loads(line)["label"] for line in args.gold.read_text().splitlines() if line}
    studies = sorted((Study(p, gold) for p in args.studies), key=lambda s: s.seed)
    s0 = studies[0]
    k = min(s.k for s in studies)
    true_shares = [s0.gold.count(y) / len(s0.gold) for y in range(len(s0.labels))]
    print(f"{len(s0.gold)} rows, labels {s0.labels}, true shares {[round(x, 3) for x in true_shares]}, seeds "
          f"{[s.seed for s in studies]}")
    rules: list[Callable] = [zero_shot, default_rule, always_average]
    for n in range(2, k + 1):
        rules += [cores_then_zero(n), equal_readings(n), agreement_weighted(n), content_weighted(n)]
    # Each ordered pair of cores as the first and the second: the seeds a record stands for.
    rules += [second_core_on_departure(0.45, a, b) for a in range(k) for b in range(k) if a != b]
    rules += [second_core_on_departure(0.45, a, b, confirm=True) for a in range(k) for b in range(k) if a != b]
    rules += [prior_adjusted(r) for r in list(rules)]
    rules += [prior_adjusted(zero_shot, 64), prior_adjusted(default_rule, 64)]
    base = [score(s, zero_shot(s))[0] for s in studies]
    print(f"{'rule':60s} {'per seed':>24s} {'mean':>6s} {'worst-zs':>8s}  shares (mean)")
    for rule in rules:
        figures = [score(s, rule(s)) for s in studies]
        accs = [f[0] for f in figures]
        worst = min(a - b for a, b in zip(accs, base))
        shares = [sum(f[2][y] for f in figures) / len(figures) for y in range(len(s0.labels))]
        recalls = [min(f[1]) for f in figures]
        cores = [getattr(rule, "cores", lambda s: None)(s) for s in studies]
        spent = "" if cores[0] is None else "  cores searched " + " ".join(map(str, cores))
        print(f"{rule.__name__:60s} {' '.join(f'{a:.3f}' for a in accs):>24s} {sum(accs) / len(accs):6.3f} "
              f"{worst:+8.3f}  {' '.join(f'{x:.2f}' for x in shares)}  min recall {min(recalls):.2f}{spent}")
    print("\nshares without centring (gold only to compare), per seed:")
    for s in studies:
        print(f"  seed {s.seed}: true {' '.join(f'{x:.2f}' for x in true_shares)}")
        for name, shares in uncentred_shares(s):
            print(f"    {name:44s} {' '.join(f'{x:.2f}' for x in shares)}")
    print("\nkappa of each reading with the others (check sample), per seed:")
    for s in studies:
        readings = [*(s.core(c) for c in range(s.k)), s.zero]
        names = [f"core{c}" for c in range(s.k)] + ["zero"]
        rows = []
        for a in range(len(readings)):
            rows.append(" ".join(f"{kappa(readings[a], readings[b], s.check):5.2f}" for b in range(len(readings))))
        accs = [score(s, r)[0] for r in readings]
        costs = [f"{c['tokens'] // 1000}k/{c['seconds']:.0f}s" for c in s.cores]
        contents = [content(s, c) for c in range(len(readings))]
        print(f"  seed {s.seed}: accuracies {' '.join(f'{n}={a:.3f}' for n, a in zip(names, accs))}; search cost {costs}")
        print(f"    content ratio {' '.join(f'{n}={c:.2f}' for n, c in zip(names, contents))}")
        for n, r in zip(names, rows):
            print(f"    {n:6s} {r}")


if __name__ == "__main__":
    main()
