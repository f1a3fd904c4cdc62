"""Write the held-out tweet set the README's 1,432-row figure is measured on.

Balanced positive/negative tweets with crowd confidence >= 0.9 from
../shared/data/tweets_sentiment.jsonl, none of them in examples/, drawn with a fixed seed:
rows (id, text) for `icm label` and gold (id, label) for `icm eval`, kept apart so the
labelling run never sees a label.

    python benchmarks/heldout_tweets.py --out runs/heldout
    icm label runs/heldout/tweets-1432.jsonl -c configs/tweets-sentiment.yaml -o runs/heldout/labels.jsonl
    icm eval runs/heldout/labels.jsonl --gold runs/heldout/tweets-1432.gold.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from icm_cli.data import load_rows  # noqa: E402  (icm's own JSONL reader)

SOURCE = ROOT.parent / "shared" / "data" / "tweets_sentiment.jsonl"


def read_jsonl(path: Path) -> list[dict]:
    return [row.fields for row in load_rows(str(path)).rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "heldout")
    ap.add_argument("--per-label", type=int, default=716)
    ap.add_argument("--seed", type=int, default=1432)
    ap.add_argument("--exclude", type=Path, action="append", default=[],
                    help="A JSONL file whose ids are left out too (another held-out set), repeatable.")
    args = ap.parse_args()

    excluded = [*(ROOT / "examples").glob("*.jsonl"), *args.exclude]
    seen = {row["id"] for path in excluded for row in read_jsonl(path)}
    pool: dict[str, list[dict]] = {"positive": [], "negative": []}
    for row in read_jsonl(args.source):
        if row["id"] not in seen and row.get("label") in pool and (row.get("crowd_confidence") or 0) >= 0.9:
            pool[row["label"]].append(row)
    rng = random.Random(args.seed)
    chosen = [r for label in ("positive", "negative") for r in rng.sample(sorted(pool[label], key=lambda r: r["id"]), args.per_label)]
    rng.shuffle(chosen)

    args.out.mkdir(parents=True, exist_ok=True)
    name = f"tweets-{len(chosen)}"
    (args.out / f"{name}.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in chosen))
    (args.out / f"{name}.gold.jsonl").write_text("".join(json.dumps({"id": r["id"], "label": r["label"]}) + "\n" for r in chosen))
    print(f"{len(chosen)} rows ({args.per_label} per label, seed {args.seed}) -> {args.out / name}.jsonl, .gold.jsonl")


if __name__ == "__main__":
    main()
