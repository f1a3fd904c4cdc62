"""Which dtype runs the model: bfloat16 where it is fast (GPUs; CPUs that measure it so), float32
elsewhere. On a CPU the answer is timed once per machine and kept, so a machine always picks the
same dtype (labels depend on it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .embedded import cache_dir


def resolve_dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        # bf16 halves memory and runs fast on GPUs and on CPUs with AVX512-BF16 or AMX; elsewhere
        # torch emulates it (measured on an AVX2-only CPU: prefill 5.5x slower than fp32).
        return torch.bfloat16 if device != "cpu" or cpu_has_fast_bf16() else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


# bfloat16 is chosen on a CPU only when its matrix products run at least this much faster than
# float32's (it also rounds more, so a small gain is not worth it).
BF16_MIN_SPEEDUP = 1.3


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes the model's matrix products faster in bfloat16 than in float32.

    The instruction flags alone do not tell: AVX512-BF16 made bf16 2.7x faster than fp32 on an
    AMD EPYC (Zen 5) and 1.7x slower on an Intel Xeon with the same flag and no AMX (measured,
    2 cores, torch 2.13). So where the flags allow it, a short product is timed once per machine
    and the answer kept in the cache directory: the same machine always picks the same dtype.
    """
    import torch

    # torch.cpu's probes are private; a torch without them reads as "no".
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if not any(getattr(torch.cpu, name, lambda: False)() for name in probes):
        return False
    record = cache_dir() / "cpu-bf16.json"
    key = f"{_cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    try:
        known = json.loads(record.read_text())
        known = known if isinstance(known, dict) and "key" not in known else {}  # an older single-entry file
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), dict) and "fast_bf16" in known[key]:
        return bool(known[key]["fast_bf16"])
    speedup = _bf16_speedup()
    fast = speedup >= BF16_MIN_SPEEDUP
    try:
        from ..data.output import atomic_write_text

        # One entry per CPU, torch and thread count: a process with another thread count (a
        # Ray actor, OMP_NUM_THREADS) keeps its own answer instead of overwriting this one.
        known[key] = {"fast_bf16": fast, "speedup": round(speedup, 2)}
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(known, indent=1) + "\n")
    except OSError:
        pass  # a read-only cache costs a re-measure next time, nothing else
    return fast


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _bf16_speedup() -> float:
    """float32 time / bfloat16 time for a product of the model's shape (about 0.3 s in all)."""
    import time

    import torch

    x, w = torch.randn(512, 640), torch.randn(2048, 640)
    best = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = x.to(dtype), w.to(dtype)
        torch.nn.functional.linear(a, b)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(4):
                torch.nn.functional.linear(a, b)
            times.append(time.perf_counter() - start)
        best[dtype] = min(times)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def resolve_device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"
