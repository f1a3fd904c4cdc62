"""Content-free calibration (Zhao et al. 2021) on a readings_study.py record, scored against gold.

Batch calibration centres each label's score on its mean over the rows, which reads every class as
equally common. Calibrating on content-free inputs instead (`N/A`, an empty text, `[MASK]`, ...,
each read after the same context as the rows) removes the label words' bias without that
assumption. For each reading of the record (each core's context, then zero-shot) and each string
(and their mean): accuracy, predicted shares and per-class recall. Reads the model for the strings
only (seconds); gold is read after, to score.

    python benchmarks/content_free.py runs/study/three512-s0.json --gold runs/study/three-600.gold.jsonl \\
        -c runs/study/three.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from icm_cli.algorithm.transfer import Transfer  # noqa: E402
from readings_rules import Study, argmax  # noqa: E402
from readings_study import core_contexts, opened_run  # noqa: E402

STRINGS = ("N/A", "", "[MASK]", "...", "The", "Tweet")


def read_strings(record: dict, config_path: Path) -> list[list[list[float]]]:
    """Per string, per context of the record, the raw label scores."""
    sets = [f"core.count={len(record['cores'])}", f"search.seed={record['seed']}"]
    with opened_run(record["data"], config_path, sets) as run:
        shape, task = run.shape, run.config.task
        transfer = Transfer(shape, core_contexts(run, record["cores"]), run.backend, task.label_prefix,
                            task.separator, zero_shot=True)
        text_field = next(iter(shape.needed))
        examples = [(-1 - k, shape.examples(0, {text_field: text})[0]) for k, text in enumerate(STRINGS)]
        return transfer.raw(examples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("record", type=Path)
    ap.add_argument("--gold", type=Path, required=True)
    ap.add_argument("-c", "--config", type=Path, required=True)
    args = ap.parse_args()
    record = json.loads(args.record.read_text())
    free = read_strings(record, args.config)
    rows = [json.loads(line) for line in args.gold.read_text(encoding="utf-8").split("\n") if line.strip()]
    gold = {str(r["id"]): r["label"] for r in rows}
    s = Study(args.record, gold)
    labels, n = len(s.labels), len(s.gold)
    print(f"labels {s.labels}; true shares " + " / ".join(f"{s.gold.count(y) / n:.2f}" for y in range(labels)))
    names = ["reading " + (f"core {c}" if c < len(record["cores"]) else "zero-shot") for c in range(len(s.raw[0]))]
    for c, name in enumerate(names):
        for label, chosen in [("mean of all", range(len(STRINGS)))] + [(repr(t), [k]) for k, t in enumerate(STRINGS)]:
            bias = [sum(free[k][c][y] for k in chosen) / len(chosen) for y in range(labels)]
            pred = [argmax([v - b for v, b in zip(s.raw[i][c], bias)]) for i in range(n)]
            acc = sum(p == g for p, g in zip(pred, s.gold)) / n
            shares = " / ".join(f"{pred.count(y) / n:.2f}" for y in range(labels))
            recall = " / ".join(f"{sum(p == g == y for p, g in zip(pred, s.gold)) / max(1, s.gold.count(y)):.2f}"
                                for y in range(labels))
            print(f"{name:<18} {label:<12} accuracy {acc:.3f}  shares {shares}  recall {recall}")


if __name__ == "__main__":
    main()
