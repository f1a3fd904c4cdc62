"""Do a few corrections help? `icm label --fixed` on held-out tweets, against the same run without.

For each seed: the default run (`icm label DATA -c CONFIG --seed S`); then, as a reviewer would
work, its review queue (`icm export --format label-studio --review K`: the least confident rows
first, as the queue orders a labels file without reading fields), answered from gold and exported
back in Label Studio's JSON format; then the same run with `--fixed` on that export. Accuracy is
measured on the rows that were NOT corrected, for both runs, so a gain is the model's, not the
reviewer's. Every model run takes /tmp/icm-cpu.lock (one model job at a time on a shared machine)
and is kept: a re-run of this script reuses what is there.

    python benchmarks/heldout_tweets.py --per-label 300 --seed 77 --out runs/fixed-heldout
    python benchmarks/corrections_help.py --data runs/fixed-heldout/tweets-600.jsonl \\
        --gold runs/fixed-heldout/tweets-600.gold.jsonl --seeds 0 1 2 --fixed 16 64
    # a variant of the corrected runs (another tag keeps its files apart):
    python benchmarks/corrections_help.py ... --tag nodemo --set core.fixed_tokens=0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
LOCK = "/tmp/icm-cpu.lock"


def jsonl(path: Path) -> list[dict]:
    # "\n" only: str.splitlines also breaks at U+0085 and friends, which tweets contain.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def icm(*args: str, lock: bool = True) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's icm, not an installed one
    cmd = [sys.executable, "-m", "icm_cli.cli", *args]
    subprocess.run((["flock", LOCK] if lock else []) + cmd, check=True, cwd=ROOT, env=env)


def label(data: Path, config: Path, seed: int, out: Path, extra: list[str]) -> dict:
    """One run, or the one already there."""
    summary = out.with_name(out.name + ".summary.json")
    if not summary.exists():
        icm("label", str(data), "-c", str(config), "--seed", str(seed), "-o", str(out), "--quiet", "--force", *extra)
    return json.loads(summary.read_text())


def corrections(labels: Path, config: Path, gold: dict[str, str], k: int, out: Path) -> list[str]:
    """The first k rows of the run's review queue, answered from gold, as Label Studio exports them."""
    queue = out.with_name(out.stem + ".queue.json")
    if not out.exists():
        icm("export", str(labels), "-c", str(config), "--format", "label-studio", "--review", str(k), "-o", str(queue),
            "--force", lock=False)
        tasks = json.loads(queue.read_text())
        for n, task in enumerate(tasks, start=1):
            answer = {"type": "choices", "from_name": "label", "to_name": "text",
                      "value": {"choices": [gold[task["data"]["id"]]]}}
            task.update(id=n, annotations=[{"id": n, "result": [answer], "was_cancelled": False}])
        out.write_text(json.dumps(tasks, ensure_ascii=False))
    return [task["data"]["id"] for task in json.loads(out.read_text())]


def accuracy(labels: Path, gold: dict[str, str], skip: set[str]) -> tuple[float, int]:
    rows = [r for r in jsonl(labels) if r["id"] not in skip]
    return sum(r["label"] == gold[r["id"]] for r in rows) / len(rows), len(rows)


def one_seed(args: argparse.Namespace, gold: dict[str, str], seed: int) -> list[dict]:
    base = args.out / f"s{seed}-none.jsonl"
    none = label(args.data, args.config, seed, base, [])
    results = [{"seed": seed, "fixed": 0, "rows": none["rows"], "accuracy": accuracy(base, gold, set())[0],
                "tokens": none["tokens_scored"], "seconds": none["wall_time_s"], "search_s": none["search_s"]}]
    for k in args.fixed:
        fix = args.out / f"s{seed}-review{k}.label-studio.json"
        ids = corrections(base, args.config, gold, k, fix)
        out = args.out / f"s{seed}-{args.tag}{k}.jsonl"
        run = label(args.data, args.config, seed, out, ["--fixed", str(fix), *[f"--set={s}" for s in args.set]])
        before = {r["id"]: r["label"] for r in jsonl(base)}
        after = {r["id"]: r for r in jsonl(out)}
        assert all(after[i]["label"] == gold[i] and after[i]["icm_source"] == "human" for i in ids)
        results.append({
            "seed": seed, "fixed": k, "tag": args.tag, "rows": run["rows"],
            "accuracy": accuracy(out, gold, set(ids))[0], "none_on_same_rows": accuracy(base, gold, set(ids))[0],
            "evaluated": accuracy(out, gold, set(ids))[1], "corrections_changing_a_label": sum(before[i] != gold[i] for i in ids),
            "demonstrations": run["fixed_demonstrations"], "disagreed": run["fixed_disagreed"],
            "tokens": run["tokens_scored"], "seconds": run["wall_time_s"], "search_s": run["search_s"],
            "zero_shot_averaged": run["zero_shot_averaged"],
        })
    return results


def table(results: list[dict]) -> str:
    lines = ["| seed | corrected | accuracy on the other rows: none -> fixed | delta | rows scored | corrections that "
             "changed a label | demonstrations | tokens | wall s (search s) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["fixed"] == 0:
            lines.append(f"| {r['seed']} | 0 | {r['accuracy']:.3f} (all {r['rows']}) | | {r['rows']} | | | "
                         f"{r['tokens']:,} | {r['seconds']:.0f} ({r['search_s']:.0f}) |")
        else:
            delta = r["accuracy"] - r["none_on_same_rows"]
            lines.append(f"| {r['seed']} | {r['fixed']} | {r['none_on_same_rows']:.3f} -> {r['accuracy']:.3f} | "
                         f"{delta:+.3f} | {r['evaluated']} | {r['corrections_changing_a_label']} | "
                         f"{r['demonstrations']} | {r['tokens']:,} | {r['seconds']:.0f} ({r['search_s']:.0f}) |")
    for k in sorted({r["fixed"] for r in results if r["fixed"]}):
        rows = [r for r in results if r["fixed"] == k]
        mean = sum(r["accuracy"] - r["none_on_same_rows"] for r in rows) / len(rows)
        lines.append(f"| mean | {k} | {sum(r['none_on_same_rows'] for r in rows) / len(rows):.3f} -> "
                     f"{sum(r['accuracy'] for r in rows) / len(rows):.3f} | {mean:+.3f} | | | | | |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "fixed-heldout" / "tweets-600.jsonl")
    ap.add_argument("--gold", type=Path, default=ROOT / "runs" / "fixed-heldout" / "tweets-600.gold.jsonl")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tweets-sentiment.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--fixed", type=int, nargs="+", default=[16, 64], help="How many rows to correct.")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "corrections-help")
    ap.add_argument("--tag", default="fixed", help="Names the corrected runs' files (a variant needs its own).")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE for the corrected runs only.")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    gold = {r["id"]: r["label"] for r in jsonl(args.gold)}
    results = []
    for seed in args.seeds:
        results += one_seed(args, gold, seed)
        (args.out / f"results-{args.tag}.json").write_text(json.dumps(results, indent=1))
        print(table(results), flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    print(f"\nCPU: {cpu}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
