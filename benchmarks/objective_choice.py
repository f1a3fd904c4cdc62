"""Which form of P(D) tracks label quality better: the paper's sum of log-probs or the reference mean log-odds?

Scores label sets of known accuracy (gold with k labels flipped at random, and the two one-label
collapses) once each, then reads both objectives off the same evaluations. Reports, per form, the
rank correlation between P(D) and accuracy, and how often the more accurate of two label sets of
equal size gets the higher U at the config's alpha. Gold is read here only to build the test sets.

    python benchmarks/objective_choice.py examples/tweets-64.jsonl examples/tweets-64.gold.jsonl -c configs/tweets-sentiment.yaml --n 32
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from icm_cli.backends.loading import load_backend  # noqa: E402
from icm_cli.run.compare import gold_by_example  # noqa: E402
from icm_cli.foundation.config import load_config  # noqa: E402
from icm_cli.data.tables import load_rows  # noqa: E402
from icm_cli.foundation.metrics import normalize_label  # noqa: E402
from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet  # noqa: E402
from icm_cli.algorithm.search import predictability  # noqa: E402
from icm_cli.algorithm.tasks import build_task  # noqa: E402


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("gold", type=Path)
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--n", type=int, default=32)
    args = ap.parse_args()
    config = load_config(args.config)
    dataset = load_rows(str(args.data))
    truth = {str(r.fields["id"]): normalize_label(r.fields["label"]) for r in load_rows(str(args.gold)).rows}
    gold = gold_by_example(dataset, config, truth)[: args.n]
    task = build_task(dataset, config.task)
    prompts = PromptSet(tuple(e.query for e in task.examples[: args.n]), task.label_words, config.task.label_prefix,
                        config.task.separator, task.calibrate)
    scorer = CoherenceScorer(prompts, load_backend(config.backend))
    rng = random.Random(0)
    sets = []
    for flips in (0, 2, 4, 6, 8, 12, 16):
        for _ in range(1 if flips == 0 else 3):
            labels = list(gold)
            for i in rng.sample(range(len(gold)), flips):
                labels[i] = 1 - labels[i]
            sets.append(tuple(labels))
    sets += [tuple(0 for _ in gold), tuple(1 for _ in gold)]
    rows = []
    for labels in sets:
        evaluation = scorer.evaluate(labels)
        acc = sum(a == b for a, b in zip(labels, gold)) / len(gold)
        rows.append((acc, {form: predictability(labels, evaluation, form) for form in ("mean_logodds", "sum_logprob")}))
    report = {"n": len(gold), "label_sets": len(rows), "calibrate": task.calibrate}
    for form in ("mean_logodds", "sum_logprob"):
        accs = [a for a, _ in rows]
        ps = [p[form] for _, p in rows]
        pairs = [(x, y) for x, y in itertools.combinations(rows, 2) if x[0] != y[0]]
        right = sum((x[1][form] > y[1][form]) == (x[0] > y[0]) for x, y in pairs)
        best = max(rows, key=lambda r: r[1][form])
        report[form] = {
            "spearman_P_vs_accuracy": round(spearman(ps, accs), 3),
            "pairs_ordered_right": round(right / len(pairs), 3),
            "accuracy_of_best_P": best[0],
            "P_of_gold": round(rows[0][1][form], 3),
            "P_of_collapses": [round(r[1][form], 3) for r in rows[-2:]],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
