"""icm: label a dataset with no human labels by Internal Coherence Maximization.

The names a notebook or a script calls are importable from here (`from icm_cli import run_label,
LabelJob, load_config`); each is loaded on first use, so `import icm_cli` stays cheap and the
floors below (one folder each: ARCHITECTURE.md) never import this module's re-exports.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC: dict[str, str] = {
    "run_label": "icm_cli.commands.label",
    "LabelJob": "icm_cli.run.label_job",
    "run_comparison": "icm_cli.commands.compare",
    "run_export": "icm_cli.commands.export",
    "ExportOptions": "icm_cli.run.export",
    "run_report": "icm_cli.commands.report",
    "ReportJob": "icm_cli.commands.report",
    "load_backend": "icm_cli.backends.loading",
    "label_dataset": "icm_cli.run.runner",
    "RunHooks": "icm_cli.run.runner",
    "RunInput": "icm_cli.run.runner",
    "RunSummary": "icm_cli.run.runner",
    **{name: "icm_cli.foundation.config" for name in (
        "Config", "TaskConfig", "SearchConfig", "CoreConfig", "TransferConfig", "BackendConfig", "HFOptions",
        "VLLMOptions", "OpenAIOptions", "RayConfig", "CheckConfig", "load_config", "parse_config")},
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'icm_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
