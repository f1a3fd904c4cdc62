"""Write held-out tweet sets (the README's figures are measured on them).

From ../shared/data/tweets_sentiment.jsonl, none of them in examples/, drawn with a fixed seed:
rows (id, text) for `icm label` and gold (id, label) for `icm eval`, kept apart so the
labelling run never sees a label. By default balanced positive/negative tweets with crowd
confidence >= 0.9 (`--per-label` each); `--rows N --labels negative,neutral,positive` draws N
tweets of those labels uniformly instead, so the classes keep the corpus's own shares.

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
from icm_cli.data.tables import load_rows  # noqa: E402  (icm's own JSONL reader)

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
    ap.add_argument("--labels", default="positive,negative")
    ap.add_argument("--min-confidence", type=float, default=0.9)
    ap.add_argument("--rows", type=int, help="draw this many uniformly (natural class shares) instead of balanced")
    ap.add_argument("--name", help="file name stem (default tweets-N)")
    args = ap.parse_args()

    excluded = [*(ROOT / "examples").glob("*.jsonl"), *args.exclude]
    seen = {row["id"] for path in excluded for row in read_jsonl(path)}
    labels = args.labels.split(",")
    pool: dict[str, list[dict]] = {label: [] for label in labels}
    for row in read_jsonl(args.source):
        if row["id"] not in seen and row.get("label") in pool and (row.get("crowd_confidence") or 0) >= args.min_confidence:
            pool[row["label"]].append(row)
    rng = random.Random(args.seed)
    if args.rows:
        everything = sorted((r for label in labels for r in pool[label]), key=lambda r: r["id"])
        chosen = rng.sample(everything, args.rows)
    else:
        chosen = [r for label in labels for r in rng.sample(sorted(pool[label], key=lambda r: r["id"]), args.per_label)]
    rng.shuffle(chosen)

    args.out.mkdir(parents=True, exist_ok=True)
    name = args.name or f"tweets-{len(chosen)}"
    (args.out / f"{name}.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in chosen))
    (args.out / f"{name}.gold.jsonl").write_text("".join(json.dumps({"id": r["id"], "label": r["label"]}) + "\n" for r in chosen))
    shares = {label: sum(r["label"] == label for r in chosen) for label in labels}
    print(f"{len(chosen)} rows ({shares}, seed {args.seed}) -> {args.out / name}.jsonl, .gold.jsonl")


if __name__ == "__main__":
    main()
