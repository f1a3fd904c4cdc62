"""icm's own overhead at scale: the whole `icm label` pipeline on 1M and 10M synthetic rows.

The rows are the shipped tweets repeated with new ids (about 130 bytes a row). The model is a
stand-in scorer that does no model work (label log-probs from a hash of the prompt's last piece,
token counts as characters / 4), so what is measured is icm itself: reading and checking every
row, drawing the core, searching it, transferring every row in chunks, writing OUT. Each size
runs as its own process, so its peak RSS is its own (os.wait4). Beside them, the real model's
transfer rows/s on 1,000 tweets, from the same run.

    python benchmarks/bench_scale.py                 # 1M and 10M (about 15 minutes on 2 cores)
    python benchmarks/bench_scale.py --sizes 100000  # a quick look

Prints a table and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWEETS = ROOT / "examples" / "tweets-1000.jsonl"
CONFIG = ROOT / "configs" / "tweets-sentiment.yaml"

# Run in the child: the CLI with the model replaced by the stand-in scorer.
CHILD = r"""
import hashlib, math, sys
from icm_cli.backends import loading
from icm_cli.backends.base import BackendStats

class StandIn:
    name = "stand-in"
    model_name = identity = "stand-in scorer (no model)"
    max_context = 1 << 30

    def __init__(self):
        self.stats = BackendStats()

    def count_tokens(self, text):
        return max(1, len(text) // 4)

    def score(self, requests):
        out = []
        for r in requests:
            last = r.segments[-1]
            h = hashlib.blake2b(last.encode(), digest_size=2).digest()
            x = (h[0] - 128) / 64.0
            out.append([-math.log1p(math.exp(-x)), -math.log1p(math.exp(x))])
            self.stats.requests += 1
            self.stats.tokens_requested += sum(len(s) // 4 for s in r.segments)
            self.stats.tokens_computed += len(last) // 4
        return out

    def forget(self):
        pass

    def close(self):
        pass

loading.load_backend = lambda *a, **k: StandIn()
from icm_cli.cli import main
sys.argv = ["icm", *sys.argv[1:]]
main()
"""


def synthetic(path: Path, rows: int) -> None:
    """The shipped tweets repeated with new ids, to `rows` rows."""
    base = [json.loads(line) for line in TWEETS.read_text(encoding="utf-8").split("\n") if line]
    with open(path, "w", encoding="utf-8") as f:
        block = []
        for k in range(rows):
            block.append(json.dumps({"id": f"s{k:08d}", "text": base[k % len(base)]["text"]}) + "\n")
            if len(block) == 100_000:
                f.write("".join(block))
                block = []
        f.write("".join(block))


def run(args: list[str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (bytes) and exit code of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"child failed ({code}): {err[-2000:]}")
    return wall, usage.ru_maxrss * 1024, code


def scale_point(rows: int, work: Path) -> dict:
    data = work / f"synthetic-{rows}.jsonl"
    if not data.exists():
        synthetic(data, rows)
    out = work / f"labels-{rows}.jsonl"
    wall, rss, _ = run([sys.executable, "-c", CHILD, "label", str(data), "-c", str(CONFIG), "-o", str(out),
                        "--force", "-q"])
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    lines = sum(1 for _ in open(out, "rb"))
    assert lines == rows, (lines, rows)
    out.unlink()
    return {"rows": rows, "bytes": data.stat().st_size, "wall_s": round(wall, 1), "rows_per_s": round(rows / wall),
            "peak_rss_mib": round(rss / 2**20), "search_s": summary["search_s"], "transfer_s": summary["transfer_s"],
            "scan_s": round(wall - summary["wall_time_s"], 1)}


def real_transfer(work: Path) -> dict:
    """The real model's transfer rows/s, same config, 1,000 tweets."""
    out = work / "real.jsonl"
    wall, rss, _ = run([sys.executable, "-m", "icm_cli.cli", "label", str(TWEETS), "-c", str(CONFIG), "-o", str(out),
                        "--force", "-q"])
    s = json.loads(out.with_name(out.name + ".summary.json").read_text())
    return {"rows": s["rows"], "transfer_rows": s["transfer_rows"], "transfer_s": s["transfer_s"],
            "transfer_rows_per_s": round(s["transfer_rows"] / s["transfer_s"], 1) if s["transfer_s"] else None,
            "model": s["model"], "wall_s": round(wall, 1), "peak_rss_mib": round(rss / 2**20)}


def cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                flags = Path("/proc/cpuinfo").read_text()
                extra = [f for f in ("amx_bf16", "avx512_bf16", "avx2") if f in flags]
                return f"{name} ({', '.join(extra)}), {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="Comma-separated row counts.")
    ap.add_argument("--work", type=Path, default=None, help="Where the synthetic files go (default: a temp dir).")
    ap.add_argument("--no-real", action="store_true", help="Skip the real model's transfer figure.")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="icm-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu()}; files in {work}", flush=True)
    points = []
    for rows in (int(s) for s in args.sizes.split(",")):
        point = scale_point(rows, work)
        points.append(point)
        print(f"{rows:>11,} rows ({point['bytes'] / 2**20:,.0f} MiB): {point['wall_s']:8.1f} s, "
              f"{point['rows_per_s']:>7,} rows/s, peak RSS {point['peak_rss_mib']:,} MiB "
              f"(checking pass {point['scan_s']} s, search {point['search_s']} s, transfer {point['transfer_s']} s)",
              flush=True)
    ratio = None
    if len(points) >= 2:
        ratio = round(points[-1]["rows_per_s"] / points[0]["rows_per_s"], 3)
        print(f"rows/s at {points[-1]['rows']:,} vs {points[0]['rows']:,}: {ratio}")
    real = None if args.no_real else real_transfer(work)
    if real:
        print(f"real model ({real['model']}): transfer {real['transfer_rows']:,} rows in {real['transfer_s']} s = "
              f"{real['transfer_rows_per_s']} rows/s")
    print(json.dumps({"bench": "scale", "cpu": cpu(), "points": points, "rows_per_s_ratio": ratio, "real": real}))


if __name__ == "__main__":
    main()
