"""The run configuration: typed dataclasses read from YAML, with one-line errors for bad values.

Every name lives in one of four modules and is imported from here: the sections and the whole
Config (config_sections.py), each backend type's own options and the backend section
(backend_options.py), reading YAML and `--set` (config_reading.py), one value checked against its
type and range (config_values.py)."""

from __future__ import annotations

from .backend_options import BACKEND_OPTIONS, FLAT_BACKEND_KEYS, BackendCommon, BackendConfig, HFOptions, OpenAIOptions, VLLMOptions
from .config_reading import Override, YamlLoader, apply_overrides, load_config, parse_config, section_types, setting_type
from .config_sections import RESUMABLE_KEYS, CheckConfig, Config, CoreConfig, Method, Objective, RayConfig, Schedule, SearchConfig, TaskConfig, TaskType, TransferConfig, resumable_key
from .config_values import build_section

__all__ = [
    "BACKEND_OPTIONS", "FLAT_BACKEND_KEYS", "RESUMABLE_KEYS", "BackendCommon", "BackendConfig", "CheckConfig",
    "Config", "CoreConfig", "HFOptions", "Method", "Objective", "OpenAIOptions", "Override", "RayConfig",
    "Schedule", "SearchConfig", "TaskConfig", "TaskType", "TransferConfig", "VLLMOptions", "YamlLoader",
    "apply_overrides", "build_section", "load_config", "parse_config", "resumable_key", "section_types",
    "setting_type",
]
