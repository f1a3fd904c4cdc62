"""Zero-shot and golden many-shot accuracy of the same model on a labelled sample, to put ICM in context.

- zero-shot: each input alone, the likelier label word.
- golden many-shot: each input after all the *other* examples with their gold labels (exact
  leave-one-out, the same prompts ICM scores), the likelier label word.
Both are shown raw and with the batch calibration ICM uses for classification.

    python benchmarks/baselines.py examples/tweets-64.jsonl examples/tweets-64.gold.jsonl -c configs/tweets-sentiment.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gold_sample import load_gold_sample  # noqa: E402
from icm_cli.backends.loading import load_backend  # noqa: E402
from icm_cli.scoring import CoherenceScorer  # noqa: E402
from icm_cli.search import argmax  # noqa: E402


def accuracy(evaluation, gold: list[int]) -> float:
    return sum(argmax(s) == g for s, g in zip(evaluation.scores, gold)) / len(gold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("gold", type=Path)
    ap.add_argument("-c", "--config", type=Path, required=True)
    args = ap.parse_args()
    sample = load_gold_sample(args.data, args.gold, args.config)
    gold = list(sample.gold)
    backend = load_backend(sample.config.backend)
    results = {}
    for calibrate in (False, True):
        scorer = CoherenceScorer(sample.prompts(calibrate), backend)
        # Zero-shot: nothing labelled, so every example is scored against an empty context.
        zero = scorer.evaluate(tuple(None for _ in gold))
        if calibrate:
            # With nothing labelled there is no labelled mean; centre on the batch instead.
            from icm_cli.scoring import _batch_calibrated, _log_softmax
            from icm_cli.search import Evaluation

            raw = [list(s) for s in zero.scores]
            zero = Evaluation(tuple(tuple(_log_softmax(v)) for v in _batch_calibrated(raw, tuple(gold))))
        many = scorer.evaluate(tuple(gold))
        tag = "calibrated" if calibrate else "raw"
        results[f"zero_shot_{tag}"] = round(accuracy(zero, gold), 4)
        results[f"golden_many_shot_{tag}"] = round(accuracy(many, gold), 4)
    results["n"] = len(gold)
    results["tokens_scored"] = backend.stats.tokens_computed
    print(json.dumps(results))


if __name__ == "__main__":
    main()
