"""Side-by-side benchmark of the scoring engine: reference path (every prompt from scratch) vs fast path.

Runs the same search (same data, config, seed, iterations) on both paths in one process on the
embedded model, prints tokens computed, wall time, iterations/s, peak RSS and prefix reuse per
run, the ratios, whether the labels are identical, then a scaling table of one U evaluation at
n = 16, 32, 64, 128 (plus a PNG plot), and ends with one JSON line (ratios are reference / fast).

    python benchmarks/bench_scoring.py [--out bench-results] [--n 64] [--iterations 6] [--quick]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from icm_cli.backends.loading import load_backend  # noqa: E402
from icm_cli.backends.prefix_tree import build_trie, trie_tokens  # noqa: E402
from icm_cli.config import BackendConfig, SearchConfig  # noqa: E402
from icm_cli.scoring import CoherenceScorer, PromptSet  # noqa: E402
from icm_cli.search import Problem, run_search  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def reset_peak_rss() -> None:
    # Hand freed heap back first (else an earlier run's leftovers count as this run's peak),
    # then write 5 to clear_refs: it resets the kernel's peak-RSS mark (VmHWM) for this process.
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class RunFigures:
    path: str
    tokens: int
    seconds: float
    iterations: int
    proposals: int
    evaluations: int
    peak_rss_mib: float
    reuse: float
    labels: tuple
    scores: tuple


def tweets(n: int) -> PromptSet:
    rows = [json.loads(line) for line in (SHARED / "tweets_sentiment.jsonl").open()]
    rows = [r for r in rows if r["label"] in ("positive", "negative") and (r["crowd_confidence"] or 0) >= 0.9]
    sample = random.Random(0).sample(rows, n)
    return PromptSet(tuple(f"Tweet: {r['text']}\nSentiment:" for r in sample), ("positive", "negative"), calibrate=True)


def gsm8k(n: int) -> PromptSet:
    rows = [json.loads(line) for line in (SHARED / "gsm8k_verification.jsonl").open()][:n]
    return PromptSet(
        tuple(f"Question: {r['question']}\nClaim: {r['cot']}\nI think this claim is" for r in rows), ("True", "False")
    )


def search_once(backend, prompts: PromptSet, reuse: bool, iterations: int, seed: int) -> RunFigures:
    backend.reuse_prefixes = reuse
    backend.forget()  # each run starts with no attention state kept
    before = dataclasses.replace(backend.stats)
    n = len(prompts.queries)
    # Every example starts labelled (at random), so every proposal is a U evaluation at full n.
    params = SearchConfig(initial_labels=n, iterations=iterations, seed=seed)
    reset_peak_rss()
    start = time.perf_counter()
    result = run_search(Problem(n, len(prompts.label_words)), CoherenceScorer(prompts, backend), params)
    seconds = time.perf_counter() - start
    tokens = backend.stats.tokens_computed - before.tokens_computed
    requested = backend.stats.tokens_requested - before.tokens_requested
    return RunFigures(
        "fast" if reuse else "reference", tokens, seconds, result.iterations, result.proposals,
        result.evaluations, peak_rss_mib(), 1 - tokens / requested if requested else 0.0, result.labels,
        result.evaluation.scores,
    )


def evaluation_requests(prompts: PromptSet) -> list:
    """The requests of one U evaluation with every example labelled (at random, fixed seed)."""
    labels = tuple(random.Random(1).choice([0, 1]) for _ in prompts.queries)
    return CoherenceScorer(prompts, backend=None).requests(labels)[0]  # type: ignore[arg-type]  # requests() only


def one_evaluation(backend, prompts: PromptSet, reuse: bool, time_it: bool) -> tuple[int, float | None]:
    """Tokens and seconds of one U evaluation with every example labelled."""
    backend.reuse_prefixes = reuse
    backend.forget()  # one evaluation on its own: nothing kept from an earlier one
    requests = evaluation_requests(prompts)
    if not time_it:
        # Counted exactly from the tokenizer; the from-scratch path computes every prompt token.
        return sum(backend.count_tokens("".join(r.segments)) + 1 for r in requests), None
    before = backend.stats.tokens_computed
    start = time.perf_counter()
    backend.score(requests)
    return backend.stats.tokens_computed - before, time.perf_counter() - start


def exact_trie_tokens(backend, prompts: PromptSet) -> int:
    return trie_tokens(build_trie(backend.rows(evaluation_requests(prompts))))


def print_run(f: RunFigures) -> None:
    print(
        f"  {f.path:9s}  tokens {f.tokens:>10,}  wall {f.seconds:8.1f} s  it/s {f.iterations / f.seconds:6.3f}  "
        f"proposals {f.proposals:3d}  evaluations {f.evaluations:3d}  peak RSS {f.peak_rss_mib:7.0f} MiB  "
        f"prefix reuse {f.reuse:6.1%}"
    )


def compare(name: str, backend, prompts: PromptSet, iterations: int, seed: int) -> dict:
    print(f"\n== {name}: n = {len(prompts.queries)}, iterations = {iterations}, seed = {seed}")
    ref = search_once(backend, prompts, False, iterations, seed)
    print_run(ref)
    fast = search_once(backend, prompts, True, iterations, seed)
    print_run(fast)
    out = {
        "token_ratio": round(ref.tokens / fast.tokens, 2),
        "speedup": round(ref.seconds / fast.seconds, 2),
        "labels_identical": ref.labels == fast.labels,
        "n": len(prompts.queries),
        "dtype": str(backend.model.dtype).replace("torch.", ""),
    }
    if out["labels_identical"]:
        out["max_score_diff"] = max(abs(a - b) for x, y in zip(ref.scores, fast.scores) for a, b in zip(x, y))
    print(f"  ratios (reference / fast): tokens {out['token_ratio']}x, time {out['speedup']}x; "
          f"labels identical: {out['labels_identical']}"
          + (f"; final scores within {out['max_score_diff']:.1e}" if out["labels_identical"] else ""))
    return out


def scaling(backend, sizes: list[int], time_reference_up_to: int, out_dir: Path) -> list[dict]:
    print("\n== scaling: one U evaluation with every example labelled (tweets)")
    # trie tokens: the exact prefix trie of the evaluation, the least any engine computes per
    # evaluation with this layout and nothing kept from earlier evaluations (what these cold
    # figures are); ref / trie bounds the token ratio of a single evaluation.
    print(f"  {'n':>4}  {'ref tokens':>11}  {'ref s':>8}  {'fast tokens':>11}  {'fast s':>7}  {'fast peak MiB':>13}  "
          f"{'tokens/(n log2 n)':>17}  {'trie tokens':>11}  {'ref/trie':>8}")
    rows = []
    for n in sizes:
        prompts = tweets(n)
        reset_peak_rss()
        fast_tokens, fast_s = one_evaluation(backend, prompts, True, True)
        peak = peak_rss_mib()
        ref_tokens, ref_s = one_evaluation(backend, prompts, False, n <= time_reference_up_to)
        per = fast_tokens / (n * math.log2(n))
        trie = exact_trie_tokens(backend, prompts)
        print(f"  {n:>4}  {ref_tokens:>11,}  {ref_s if ref_s is not None else float('nan'):>8.1f}  {fast_tokens:>11,}  "
              f"{fast_s:>7.1f}  {peak:>13.0f}  {per:>17.1f}  {trie:>11,}  {ref_tokens / trie:>8.2f}"
              + ("" if ref_s is not None else "  (reference counted, not timed)"))
        rows.append({"n": n, "reference_tokens": ref_tokens, "reference_s": ref_s, "fast_tokens": fast_tokens,
                     "fast_s": fast_s, "fast_peak_rss_mib": round(peak), "fast_tokens_per_nlogn": round(per, 1),
                     "trie_tokens": trie})
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        ns = [r["n"] for r in rows]
        axes[0].loglog(ns, [r["reference_tokens"] for r in rows], "o-", label="reference (from scratch)")
        axes[0].loglog(ns, [r["fast_tokens"] for r in rows], "o-", label="fast (shared prefixes, cold)")
        scale = rows[0]["fast_tokens"] / (ns[0] * math.log2(ns[0]))
        axes[0].loglog(ns, [scale * n * math.log2(n) for n in ns], ":", label="n log n")
        axes[0].loglog(ns, [rows[0]["reference_tokens"] * (n / ns[0]) ** 2 for n in ns], ":", label="n^2")
        axes[0].set_xlabel("labelled examples n"), axes[0].set_ylabel("tokens per U evaluation"), axes[0].legend()
        timed = [r for r in rows if r["reference_s"] is not None]
        axes[1].loglog([r["n"] for r in timed], [r["reference_s"] for r in timed], "o-", label="reference")
        axes[1].loglog(ns, [r["fast_s"] for r in rows], "o-", label="fast")
        axes[1].set_xlabel("labelled examples n"), axes[1].set_ylabel("seconds per U evaluation"), axes[1].legend()
        fig.tight_layout()
        fig.savefig(out_dir / "scaling.png", dpi=100)
        print(f"  plot: {out_dir / 'scaling.png'}")
    except ImportError:
        print("  (matplotlib not installed: no plot; pip install 'icm-cli[bench]')")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="float32",
                    help="for the side-by-side searches: fp32, so batching cannot flip a borderline proposal")
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--parts", default="compare,scaling",
                    help="compare (the side-by-side searches), scaling, or both (default)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    results: dict = {}
    if "compare" in parts:
        exact = load_backend(BackendConfig(dtype=args.dtype), lambda m: print(m, file=sys.stderr))
        print(f"model: {exact.model_name}, torch threads {__import__('torch').get_num_threads()}")
        print(f"side-by-side searches in {exact.model.dtype}; scaling in the default dtype (auto)")
        n = 16 if args.quick else args.n
        results["tweets"] = compare("tweets", exact, tweets(n), args.iterations, args.seed)
        results["gsm8k"] = compare("gsm8k-verification (longer inputs)", exact, gsm8k(8 if args.quick else 16),
                                   args.iterations, args.seed)
        del exact
    if "scaling" in parts:
        fast = load_backend(BackendConfig(), lambda m: print(m, file=sys.stderr))
        print(f"scaling backend: {fast.model_name}")
        sizes = [8, 16] if args.quick else [16, 32, 64, 128]
        results["scaling"] = scaling(fast, sizes, 16 if args.quick else 64, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    if "tweets" in results:
        print(json.dumps(results["tweets"]))


if __name__ == "__main__":
    main()
