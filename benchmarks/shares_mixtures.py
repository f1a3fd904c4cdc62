"""Do a run's class shares follow the data? Resample a held-out record's own rows to known class
shares and read each gold-free share estimate off every mixture.

A way of labelling whose shares follow the data must give more labels to a class when the rows
hold more of it. Taking the same rows (readings_study.py's records: every reading a run could
combine) in several mixtures isolates that: the readings of each row are fixed, only the shares
move (gold picks which rows go in; no estimate reads it). Each mixture is centred on its own rows,
as a run centres on its own sample. Printed per record and estimate: the shares each mixture's
labels take, and the slope of the predicted share on the true share over the mixtures and
classes (1: the labels follow the data; 0: they are blind to it).

    python benchmarks/shares_mixtures.py runs/study/three-s*.json --gold runs/study/three-600.gold.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from icm_cli.algorithm.class_prior import estimate  # noqa: E402  (the tool's own EM, as a run estimates)

ROWS = 200  # per mixture: the rarest class of a 600-row record fills 40% of it
DRAWS = 8  # mixtures drawn per share vector (the estimate is their mean)


def log_softmax(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def centred(raw: np.ndarray) -> np.ndarray:
    """rows x labels raw log-probs, centred on their mean over these rows (batch calibration)."""
    return log_softmax(raw - raw.mean(axis=0, keepdims=True))


def em_shares(readings: np.ndarray) -> np.ndarray:
    return np.array(estimate(readings.tolist()).shares)


ESTIMATES = ("zero-shot, centred", "cores + zero-shot, centred", "EM estimate on the combined", "combined + EM prior")


def estimates(raw: np.ndarray) -> dict[str, np.ndarray]:
    """raw: rows x readings (cores..., zero-shot last) x labels. Each estimate's predicted shares."""
    k = raw.shape[2]
    zero = centred(raw[:, -1])
    combined = log_softmax(np.mean([centred(raw[:, c]) for c in range(raw.shape[1])], axis=0))

    def shares(r: np.ndarray) -> np.ndarray:
        return np.bincount(r.argmax(axis=1), minlength=k) / len(r)

    prior = em_shares(combined)
    return dict(zip(ESTIMATES, (shares(zero), shares(combined), prior, shares(combined + np.log(prior)))))


def mixtures(k: int) -> list[tuple[float, ...]]:
    """Uniform, then each class rare (10%) and each class common (60%), the rest even."""
    out = [tuple([1 / k] * k)]
    for share in (0.1, 0.6):
        for y in range(k):
            out.append(tuple(share if j == y else (1 - share) / (k - 1) for j in range(k)))
    return out


def study(path: Path, gold: dict[str, str], rng: np.random.Generator, say: Callable[[str], None]) -> dict:
    d = json.loads(path.read_text())
    labels = d["labels"]
    y = np.array([labels.index(gold[d["row_ids"][i]]) for i in d["ids"]])
    raw = np.array(d["raw"])
    k = len(labels)
    rows = min(ROWS, int(min(np.bincount(y, minlength=k)) / 0.6))
    say(f"\n{path.name}: {len(y)} rows, true shares {np.round(np.bincount(y) / len(y), 2)}, "
        f"{DRAWS} mixtures of {rows} rows per share vector")
    true, got = [], {}
    for mix in mixtures(k):
        counts = [int(round(rows * s)) for s in mix]
        draws = [estimates(raw[np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=False)
                                               for c, n in enumerate(counts)])]) for _ in range(DRAWS)]
        true.append(np.array(counts) / sum(counts))
        line = []
        for name in draws[0]:
            mean = np.mean([dr[name] for dr in draws], axis=0)
            got.setdefault(name, []).append(mean)
            line.append(f"{' '.join(f'{v:.2f}' for v in mean)}")
        say(f"  true {' '.join(f'{v:.2f}' for v in true[-1])}  ->  " + "  |  ".join(line))
    slopes = {}
    t = np.concatenate(true)
    for name, values in got.items():
        g = np.concatenate(values)
        slopes[name] = float(np.polyfit(t, g, 1)[0])
    say("  slope of predicted on true share (1: follows the data, 0: blind): "
        + ", ".join(f"{name} {s:.2f}" for name, s in slopes.items()))
    return slopes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("records", nargs="+", type=Path)
    ap.add_argument("--gold", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    gold = {json.loads(line)["id"]: json.loads(line)["label"] for line in args.gold.read_text().splitlines() if line}
    rng = np.random.default_rng(args.seed)
    print(f"columns: {' | '.join(ESTIMATES)}")
    results = {p.name: study(p, gold, rng, print) for p in args.records}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
