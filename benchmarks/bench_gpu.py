"""GPU benchmark with no downloads: random weights in real models' shapes, every figure in one run.

For each shape (the embedded Gemma 3 270M's own config; Gemma 3 4B's; Llama 3.1 8B's with the
embedded tokenizer's vocabulary), a model with random bfloat16 weights is built on the GPU and
the hf backend runs on it as `icm label` would (the tree path, read ahead on). Printed, side by
side: raw batched prefill (64 x 512, the model's own attention), an ICM search's tokens/s and
engine efficiency (its ratio to that prefill), the same search with read ahead off and on the
CPU's piece-by-piece path, transfer rows/s and tokens/s against prefill, peak GPU memory; on
the 270M shape, exactness in float32 (a search on the fast path against every prompt scored from
scratch) and how far bfloat16 moves log-odds; and `icm label` on the shipped 1,000 tweets with
the shipped config (device auto), its model load apart from its labelling.

Speeds are real; labels are not (the weights are random). Ends with one JSON line.

    python benchmarks/bench_gpu.py [--shapes 270m,4b,8b] [--shape-dir DIR] [--out bench-results/gpu]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scoring as bs  # noqa: E402
from icm_cli.backends.hf import HFBackend  # noqa: E402
from icm_cli.foundation.backend_options import HFOptions  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Shape:
    name: str
    iterations: int  # search iterations (fewer on large shapes: same tokens per evaluation, slower)
    overrides: dict


GEMMA_4B = {"hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34, "num_attention_heads": 8,
            "num_key_value_heads": 4, "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 1024}
SHAPES = {
    "270m": Shape("Gemma 3 270M (the embedded model's config)", 60, {}),
    "4b": Shape("Gemma 3 4B (34 layers, 2560 wide)", 30, GEMMA_4B),
    "8b": Shape("Llama 3.1 8B (32 layers, 4096 wide, 8 KV heads; the embedded tokenizer's vocabulary)", 30,
                {"llama": True}),
}
SMALL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 1, "head_dim": 32}


def shape_dir(given: Optional[Path]) -> Path:
    """config.json + tokenizer of the embedded model: given, or converted from the installed package."""
    if given is None:
        from icm_cli.backends.embedded import embedded_model_dir

        return Path(embedded_model_dir(lambda m: print(f"  {m}", flush=True), False))
    packed = given / "tokenizer.json.gz"
    if packed.exists() and not (given / "tokenizer.json").exists():
        with gzip.open(packed, "rb") as src, open(given / "tokenizer.json", "wb") as dst:
            shutil.copyfileobj(src, dst)
    return given


def build(directory: Path, shape: Shape, dtype: Any, device: str, small: bool) -> tuple[Any, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    base = AutoConfig.from_pretrained(str(directory))
    if shape.overrides.get("llama"):
        config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                             num_key_value_heads=8, vocab_size=base.vocab_size, max_position_embeddings=131072,
                             rope_theta=500000.0, bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id)
    else:
        config = AutoConfig.from_pretrained(str(directory), **shape.overrides)
        if shape.overrides:  # a layer pattern for the new depth: every sixth layer global
            config.layer_types = ["full_attention" if (k + 1) % 6 == 0 else "sliding_attention"
                                  for k in range(config.num_hidden_layers)]
    if small:
        for key, value in SMALL.items():
            setattr(config, key, value)
        if getattr(config, "layer_types", None):
            config.layer_types = ["sliding_attention", "full_attention"]
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval(), tokenizer


def backend_for(model: Any, tokenizer: Any, name: str, attention: str = "tree") -> HFBackend:
    return HFBackend(model, tokenizer, HFOptions(kv_cache_mib=16384, attention=attention), name=name)


def memory_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def shape_part(key: str, args: argparse.Namespace, directory: Path, results: dict) -> None:
    import torch

    shape = SHAPES[key]
    out: dict = {"shape": shape.name}
    results[key] = out
    print(f"\n== {key}: {shape.name}, random bfloat16 weights on {args.device}", flush=True)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    model, tokenizer = build(directory, shape, torch.bfloat16, args.device, args.small)
    hf = backend_for(model, tokenizer, f"random {key}")
    out["build_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    hf.warm_up()
    out["warm_up_s"] = round(time.perf_counter() - start, 1)
    out["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6)
    out["call_tokens"] = hf.packed_tokens
    print(f"  built in {out['build_s']} s ({out['params_m']}M parameters), kernels compiled in {out['warm_up_s']} s; "
          f"calls of up to {hf.packed_tokens:,} tokens", flush=True)
    sizes = dataclasses.replace(args.sizes, iterations=min(args.sizes.iterations, shape.iterations))
    prepared, called = hf.tree.prepare_s, hf.tree.call_s
    bs.engine_part(hf, out, sizes, prefill=args.prefill)
    out.pop("_hf_search", None)
    out["search_time_split"] = {"host_prepare_s": round(hf.tree.prepare_s - prepared, 3),
                                "calls_s": round(hf.tree.call_s - called, 3), "search_s": out["search_s"]}
    print(f"  of the search's {out['search_s']:.2f} s: {hf.tree.call_s - called:.2f} s in scoring calls, "
          f"{hf.tree.prepare_s - prepared:.2f} s of it preparing on the host; the rest is the scorer's prompts "
          f"and the search", flush=True)
    lookahead, hf.lookahead = hf.lookahead, 1
    f = bs.search(hf, bs.tweets(sizes.search_texts, seed=1), sizes.iterations, seed=0)
    hf.lookahead = lookahead
    out["search_no_read_ahead"] = {"tokens_per_s": round(f.rate), "seconds": round(f.seconds, 3),
                                   "evaluations": f.evaluations, "tokens": f.tokens}
    print(f"  read ahead off: {f.rate:,.0f} tokens/s ({f.tokens:,} tokens in {f.seconds:.2f} s), "
          f"efficiency {f.rate / out['raw_prefill_tokens_per_s']:.3f}", flush=True)
    print("  transfer:", flush=True)
    bs.transfer_part(hf, out, "transfer", sizes)
    if key == "270m" and not args.small:
        pieces = backend_for(model, tokenizer, "random 270m, pieces", attention="pieces")
        f = bs.search(pieces, bs.tweets(sizes.search_texts, seed=1), 10, seed=0)
        out["pieces_path_10_iterations"] = {"tokens_per_s": round(f.rate), "seconds": round(f.seconds, 2),
                                            "efficiency": round(f.rate / out["raw_prefill_tokens_per_s"], 4)}
        print(f"  the CPU's piece-by-piece path on this GPU (10 iterations): {f.rate:,.0f} tokens/s, "
              f"efficiency {f.rate / out['raw_prefill_tokens_per_s']:.3f}", flush=True)
        del pieces
    out["peak_gpu_gib"] = round(memory_gib(), 2)
    print(f"  peak GPU memory {out['peak_gpu_gib']} GiB", flush=True)
    del hf, model
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()


def exactness_part(args: argparse.Namespace, directory: Path, results: dict) -> None:
    """float32: a search's labels on the fast path against every prompt from scratch; bfloat16:
    the log-odds of one evaluation on the fast path against from scratch."""
    import torch

    from icm_cli.algorithm.scoring import CoherenceScorer

    print("\n== exactness on the 270M shape", flush=True)
    out: dict = {}
    results["exactness"] = out
    n, iterations = (8, 4) if args.small else (16, 20)
    texts = bs.tweets(n, seed=4)
    model, tokenizer = build(directory, SHAPES["270m"], torch.float32, args.device, args.small)
    hf = backend_for(model, tokenizer, "random 270m float32")
    fast = bs.search(hf, texts, iterations, seed=0, initial=n)
    hf.reuse_prefixes = False
    slow = bs.search(hf, texts, iterations, seed=0, initial=n)
    out["float32_search_labels_identical"] = fast.labels == slow.labels
    out["float32_search"] = {"n": n, "iterations": iterations, "fast_tokens": fast.tokens, "scratch_tokens": slow.tokens}
    print(f"  float32, {n} tweets, {iterations} iterations: labels identical {fast.labels == slow.labels} "
          f"(fast {fast.tokens:,} tokens, from scratch {slow.tokens:,})", flush=True)
    del hf, model
    gc.collect()
    model, tokenizer = build(directory, SHAPES["270m"], torch.bfloat16, args.device, args.small)
    hf = backend_for(model, tokenizer, "random 270m bf16")
    labels = tuple(k % 2 for k in range(n))
    requests, _ = CoherenceScorer(bs.prompts_of(texts), hf).requests(labels)
    hf.forget()
    tree = hf.score(requests)
    hf.reuse_prefixes = False
    scratch = hf.score(requests)
    moves = [abs((a[0] - a[1]) - (b[0] - b[1])) for a, b in zip(tree, scratch)]
    out["bfloat16_logodds_move"] = {"max": round(max(moves), 4), "mean": round(sum(moves) / len(moves), 4)}
    print(f"  bfloat16 label log-odds, fast path vs from scratch: max move {max(moves):.4f}, "
          f"mean {sum(moves) / len(moves):.4f}", flush=True)


def checkpoint(args: argparse.Namespace, directory: Path) -> Path:
    """The random 270M checkpoint `icm label` and the GPU tests load (written once per machine)."""
    import torch

    target = args.out / "random-270m"
    if not (target / "config.json").exists():
        model, tokenizer = build(directory, SHAPES["270m"], torch.bfloat16, "cpu", args.small)
        model.save_pretrained(str(target))
        tokenizer.save_pretrained(str(target))
    return target


def cli_part(args: argparse.Namespace, directory: Path, results: dict) -> None:
    """`icm label` on the shipped 1,000 tweets, shipped config, device auto, random 270M weights."""
    print("\n== icm label examples/tweets-1000.jsonl -c configs/tweets-sentiment.yaml (device auto)", flush=True)
    target = checkpoint(args, directory)
    data = "examples/tweets-16.jsonl" if args.small else "examples/tweets-1000.jsonl"
    labels = args.out / "tweets.labels.jsonl"
    command = [sys.executable, "-m", "icm_cli.cli", "label", data, "-c",
               "configs/tweets-sentiment.yaml", "--model", str(target), "-o", str(labels), "--force"]  # not quiet: its log says which attention path ran
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    seconds = time.perf_counter() - start
    # Kept whole: a fallback from the GPU kernel is said there in one line, and nowhere else.
    (args.out / "label.stderr.log").write_text(proc.stderr)
    out: dict = {"exit_code": proc.returncode, "command_s": round(seconds, 1)}
    results["icm_label_1000"] = out
    if proc.returncode != 0:
        print(f"  exit {proc.returncode}: {proc.stderr.strip()[-600:]}", flush=True)
        return
    summary = json.loads(Path(str(labels) + ".summary.json").read_text())
    for key in ("model", "wall_time_s", "search_s", "transfer_s", "check_s", "tokens_search", "tokens_transfer",
                "evaluations", "rows"):
        out[key] = summary.get(key)
    out["signal"] = (summary.get("signal") or {}).get("verdict")
    out["load_and_start_s"] = round(seconds - summary["wall_time_s"], 1)
    print(f"  exit 0 in {seconds:.1f} s: labelling {summary['wall_time_s']} s (search {summary['search_s']} s, "
          f"transfer {summary['transfer_s']} s, check {summary['check_s']} s), model load and start "
          f"{out['load_and_start_s']} s; {summary['model']}; verdict {out['signal']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="270m,4b,8b")
    ap.add_argument("--parts", default="cli,shapes,exactness")
    ap.add_argument("--shape-dir", type=Path, help="config.json + tokenizer of the embedded model "
                    "(default: converted from the installed package)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "gpu")
    ap.add_argument("--smoke", action="store_true", help="tiny models and sizes: the tests' run of every part")
    ap.add_argument("--deadline", type=float, default=0, help="seconds after which parts not yet begun are skipped "
                    "(a lent GPU's time is short); 0: none")
    args = ap.parse_args()
    args.small = args.smoke
    args.sizes = bs.SMOKE if args.smoke else bs.Sizes()
    args.prefill = (2, 128) if args.smoke else (64, 512)
    args.out.mkdir(parents=True, exist_ok=True)
    directory = shape_dir(args.shape_dir)
    results: dict = {"device": describe(args.device)}
    print(f"device: {results['device']}", flush=True)
    parts = args.parts.split(",")
    shapes = args.shapes.split(",") if "shapes" in parts else []
    steps = [("checkpoint", lambda: checkpoint(args, directory))] if "checkpoint" in parts else []
    steps += [("cli", lambda: cli_part(args, directory, results))] if "cli" in parts else []
    # The embedded shape, the 4B shape, the exactness checks, then the rest (a lent GPU's time is short).
    steps += [(f"shape {k}", (lambda k=k: shape_part(k, args, directory, results))) for k in shapes[:1]]
    steps += [(f"shape {k}", (lambda k=k: shape_part(k, args, directory, results))) for k in shapes[1:2]]
    steps += [("exactness", lambda: exactness_part(args, directory, results))] if "exactness" in parts else []
    steps += [(f"shape {k}", (lambda k=k: shape_part(k, args, directory, results))) for k in shapes[2:]]
    began = time.monotonic()
    for name, step in steps:
        if args.deadline and time.monotonic() - began > args.deadline:
            results.setdefault("skipped", []).append(name)
            print(f"\n== {name}: skipped (past the {args.deadline:.0f} s deadline)", flush=True)
            continue
        try:
            step()
        except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' figures
            results.setdefault("failed", {})[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    if results.get("failed"):
        sys.exit(1)


def describe(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    return f"{bs.cpu_description()}, torch {torch.__version__}"


if __name__ == "__main__":
    main()
