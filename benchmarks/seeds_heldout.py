"""Is one run enough? `icm label` over several seeds on a held-out set, against asking the model.

For each variant (a name and `--set` overrides; `default` is the config as it is) and seed: one
`icm label` run, scored against gold afterwards (accuracy, per-class recall and predicted shares,
the signal verdict, tokens, wall time, whether `core.count: auto` searched a second core). The
zero-shot run (`search.method=zero_shot`, calibrated) is the floor every seed should reach. Gold
is read only here, after each run. Every model run takes /tmp/icm-cpu.lock (one model job at a
time) and is kept: a re-run reuses what is there.

    python benchmarks/heldout_tweets.py ...   # draw the held-out sets (not the shipped examples)
    python benchmarks/seeds_heldout.py --data runs/study/two-1432.jsonl --gold runs/study/two-1432.gold.jsonl \\
        --seeds 0 1 2 --variant default --variant auto:core.count=auto --out runs/seeds/two
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = "/tmp/icm-cpu.lock"


def jsonl(path: Path) -> list[dict]:
    # "\n" only: str.splitlines also breaks at U+0085 and friends, which tweets contain.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def run(data: Path, config: Path, seed: int, out: Path, sets: list[str]) -> dict:
    """One run, or the one already there; its summary."""
    summary = out.with_name(out.name + ".summary.json")
    if not summary.exists():
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}  # this checkout's icm
        cmd = ["flock", LOCK, sys.executable, "-m", "icm_cli.cli", "label", str(data), "-c", str(config),
               "--seed", str(seed), "-o", str(out), "--quiet", "--force", *[f"--set={s}" for s in sets]]
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return json.loads(summary.read_text())


def score(out: Path, gold: dict[str, str], words: list[str]) -> dict:
    rows = jsonl(out)
    pred = [r["label"] for r in rows]
    true = [gold[r["id"]] for r in rows]
    recall = {w: sum(p == t == w for p, t in zip(pred, true)) / max(1, true.count(w)) for w in words}
    return {"accuracy": sum(p == t for p, t in zip(pred, true)) / len(rows), "recall": recall,
            "shares": {w: pred.count(w) / len(pred) for w in words}, "true_shares": {w: true.count(w) / len(true)
                                                                                     for w in words}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--gold", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "tweets-sentiment.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME or NAME:KEY=VALUE[,KEY=VALUE...]; default: the config as it is.")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gold = {r["id"]: r["label"] for r in jsonl(args.gold)}
    words = sorted(set(gold.values()))
    variants = [(v.partition(":")[0], [s for s in v.partition(":")[2].split(",") if s]) for v in args.variant or ["default"]]
    zs_summary = run(args.data, args.config, 0, args.out / "zero_shot.jsonl", ["search.method=zero_shot"])
    zs = score(args.out / "zero_shot.jsonl", gold, words)
    results = [{"variant": "zero_shot", "seed": None, **zs, "tokens": zs_summary["tokens_scored"],
                "seconds": zs_summary["wall_time_s"], "verdict": (zs_summary.get("signal") or {}).get("verdict")}]
    for name, sets in variants:
        for seed in args.seeds:
            out = args.out / f"{name}-s{seed}.jsonl"
            summary = run(args.data, args.config, seed, out, sets)
            signal = summary.get("signal") or {}
            results.append({"variant": name, "seed": seed, **score(out, gold, words),
                            "tokens": summary["tokens_scored"], "seconds": summary["wall_time_s"],
                            "search_s": summary["search_s"], "verdict": signal.get("verdict"),
                            "second_core": summary.get("second_core"), "core_kappa": summary.get("core_kappa"),
                            "weights": summary.get("reading_weights"), "cores": summary["cores"]})
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    base = zs["accuracy"]
    print(f"{args.data.name}: {len(gold)} rows, true shares "
          + ", ".join(f"{w} {zs['true_shares'][w]:.0%}" for w in words))
    print("| variant | seed | accuracy | minus zero-shot | recall (" + ", ".join(words) + ") | shares | verdict "
          "| cores (first core's kappa) | tokens | wall s (search s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rec = " / ".join(f"{r['recall'][w]:.2f}" for w in words)
        sh = " / ".join(f"{r['shares'][w]:.2f}" for w in words)
        cores = "" if r["seed"] is None else f"{r['cores']}" + (f" ({r['core_kappa']})" if r.get("core_kappa") is not None else "")
        search = f" ({r['search_s']:.0f})" if r.get("search_s") is not None else ""
        print(f"| {r['variant']} | {'' if r['seed'] is None else r['seed']} | {r['accuracy']:.3f} | "
              f"{r['accuracy'] - base:+.3f} | {rec} | {sh} | {r['verdict']} | {cores} | {r['tokens']:,} | "
              f"{r['seconds']:.0f}{search} |")
    for name, _ in variants:
        mine = [r for r in results if r["variant"] == name]
        accs = [r["accuracy"] for r in mine]
        secs = [r["seconds"] for r in mine]
        print(f"| {name} | mean | {sum(accs) / len(accs):.3f} | worst {min(accs) - base:+.3f} | | | | | "
              f"{sum(r['tokens'] for r in mine) // len(mine):,} | {sum(secs) / len(secs):.0f} |")
    cpu = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    print(f"\nCPU: {cpu}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
