"""Building the configured backend: the registry names its loader."""

from __future__ import annotations

from typing import Callable

from ..foundation.config import BackendConfig
from .base import Backend
from .registry import backend_type


def load_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None,
                 progress: bool = False) -> Backend:
    """`progress`: progress bars of a first-run conversion may be drawn (stderr is a terminal
    and the user did not ask for quiet)."""
    return backend_type(config.type).load()(config, log, progress)
