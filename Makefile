# `make bench` and `make test` set up everything they need on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
comma  := ,
# GPU builds (and NVML bindings) are installed where nvidia-smi finds a GPU.
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
EXTRAS  = torch,onnx-$(KIND),report,dev$(if $(HAS_GPU),$(comma)gpu)
KIND    := $(if $(HAS_GPU),gpu,cpu)
STAMP   := $(VENV)/.setup-$(KIND)
# The MXNet path's own environment (see pyproject.toml's mxnet extras for why).
MX_VENV  := .venv-mxnet
MX_BIN   := $(MX_VENV)/bin
MX_STAMP := $(MX_VENV)/.setup-$(KIND)
# `bench fleet`'s environment: the harness with SkyPilot (the fleet extra), no framework.
FLEET_VENV  := .venv-fleet
FLEET_BIN   := $(FLEET_VENV)/bin
FLEET_STAMP := $(FLEET_VENV)/.setup
# `bench serve` and endpoint runs: PyTriton (Triton Inference Server) and the Open Inference
# Protocol clients need numpy < 2, so the served path has its own environment, with the
# model paths it serves (torch, onnxruntime).
SERVE_VENV  := .venv-serve
SERVE_BIN   := $(SERVE_VENV)/bin
SERVE_STAMP := $(SERVE_VENV)/.setup-$(KIND)
SUITE  ?= quick
# The main test suite's xdist workers: the usable cores, at most 8.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n > 8 ? 8 : n )))
# One suite per environment; `make test` runs them at once.
TEST_SUITES := test-main test-serve test-mxnet test-fleet
ENVS = $(STAMP) $(MX_STAMP) $(FLEET_STAMP) $(SERVE_STAMP)
# Side by side (-j), each target's output printed whole as it ends (-O), every one run even
# when another fails (-k): make still fails, naming the failed target.
PARALLEL = $(MAKE) --no-print-directory -j -k --output-sync=target
OUT    ?= out/gpu-check
REPORT_OUT ?= out/report

.PHONY: help setup setup-all setup-fleet setup-serve fleet-tools bench test $(TEST_SUITES) lint format overhead gpu-check bench-pytest bench-serving report clean

help:
	@echo "make bench      set up, then run the '$(SUITE)' suite and print its table"
	@echo "make test       set up, then run the test suites (the four environments' at once)"
	@echo "make setup-fleet  .venv-fleet, the environment of bench fleet (SkyPilot)"
	@echo "make setup-serve  .venv-serve, the environment of bench serve and --endpoint runs"
	@echo "make lint       ruff check, format check and mypy (strict on bench/)"
	@echo "make format     ruff format and autofix"
	@echo "make overhead   the harness against bare loops: eager, and the fast modes (compiled, pipelined)"
	@echo "make bench-pytest  the workloads under pytest-benchmark, saved and compared"
	@echo "make bench-serving  serving timings: SLA search vs M/D/1, single-stream vs loop, SUT cost"
	@echo "make report     report of everything under results/ into REPORT_OUT=$(REPORT_OUT)"
	@echo "make gpu-check  GPU checks (workshop suite eager + fast suite, overhead, gpu tests) into OUT=$(OUT) [ARGS=...]"
	@echo "make clean      remove the environment and caches (results/runs stays)"

setup: $(STAMP) $(MX_STAMP)

# The four environments, installed side by side.
setup-all:
	@$(PARALLEL) $(ENVS)

# pip installs with --no-compile: Python compiles to bytecode what is imported, when first
# imported; compiling every module at install time (about 40,000 files in the four
# environments, most never imported) costs more than a minute of CPU.

# On a GPU machine PyTorch goes in first (here and in .venv-serve), in the CUDA build whose
# kernels run on every GPU nvidia-smi lists (bench/run/builds.py: cu126 on a V100, cu130 from
# Turing on); the extras then keep it. The CPU set-up takes torch as pyproject.toml allows.
TORCH_FIRST = $(if $(HAS_GPU),build=$$(nvidia-smi --query-gpu=compute_cap --format=csv$(comma)noheader \
	  | $(PYTHON) bench/run/builds.py torch-pip) && $(1)/python -m pip install -q --no-compile $$build)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --upgrade pip
	$(call TORCH_FIRST,$(BIN))
	$(BIN)/python -m pip install -q --no-compile -e ".[$(EXTRAS)]"
	rm -f $(VENV)/.setup-*
	touch $@

$(MX_STAMP): pyproject.toml
	$(PYTHON) -m venv $(MX_VENV)
	$(MX_BIN)/python -m pip install -q --no-compile --upgrade pip
	$(MX_BIN)/python -m pip install -q --no-compile -e ".[mxnet-$(KIND),dev]"
	rm -f $(MX_VENV)/.setup-*
	touch $@

setup-fleet: $(FLEET_STAMP) fleet-tools

# SkyPilot (bench fleet, and the fleet tests' dry runs) needs rsync: installed with apt-get
# where it is missing and we are root, else asked for.
fleet-tools:
	@if ! command -v rsync >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsync >/dev/null; \
	  else echo "rsync is missing (SkyPilot needs it): install it, then run make again" >&2; \
	    exit 1; fi; \
	fi

$(FLEET_STAMP): pyproject.toml
	$(PYTHON) -m venv $(FLEET_VENV)
	$(FLEET_BIN)/python -m pip install -q --no-compile --upgrade pip
	$(FLEET_BIN)/python -m pip install -q --no-compile -e ".[fleet,report,dev]"
	touch $@

setup-serve: $(SERVE_STAMP)

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_BIN)/python -m pip install -q --no-compile --upgrade pip
	$(call TORCH_FIRST,$(SERVE_BIN))
	$(SERVE_BIN)/python -m pip install -q --no-compile -e ".[serve,torch,onnx-$(KIND),dev]"
	rm -f $(SERVE_VENV)/.setup-*
	touch $@

bench: setup
	$(BIN)/bench suite $(SUITE)

# The environments install side by side; the suites start once all four are there (tests of
# one reach the others: the MXNet parity probes, the backends `bench suite` finds, endpoint
# runs). The main suite runs in TEST_WORKERS xdist workers, a module to a worker at a time
# (module fixtures built once), the modules with `slow` tests first (tests/conftest.py).
test:
	@$(PARALLEL) $(TEST_SUITES)

# One OpenMP thread per test process: the suites run side by side (xdist workers, the worker
# processes they start, the other environments' suites). With a thread per core in each, an
# OpenMP team waits, spinning, for threads that other processes hold off the cores, and a CPU
# test takes up to ten times as long. An OMP_NUM_THREADS already set wins. (Benchmarks, such
# as `make bench-pytest`, keep the machine's default.)
ONE_THREAD = OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1}

test-main: $(ENVS)
	$(ONE_THREAD) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

test-serve: $(ENVS)
	$(ONE_THREAD) $(SERVE_BIN)/python -m pytest tests/serve -m "not slow"

test-mxnet: $(ENVS)
	$(ONE_THREAD) $(MX_BIN)/python -m pytest tests/mxnet

test-fleet: $(ENVS) fleet-tools
	$(ONE_THREAD) $(FLEET_BIN)/python -m pytest tests/fleet

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# pytest-benchmark: time the workloads, save the run, fail on a >10 % slower median than
# the last saved run on this machine (the first run only saves).
bench-pytest: setup
	$(BIN)/python -m pytest tests/benchmarks --benchmark-enable --benchmark-only \
	  --benchmark-autosave $(if $(wildcard .benchmarks/*/*.json),--benchmark-compare \
	  --benchmark-compare-fail=median:10%)

# Timing comparisons of the LoadGen scenarios, reported into out/bench-serving.json (not
# asserted in make test: they vary with the machine's load).
bench-serving: setup
	$(BIN)/python -m tests.benchmarks.serving --out out/bench-serving.json

report: setup
	$(BIN)/bench report results --out $(REPORT_OUT) $(REPORT_ARGS)

overhead: setup
	$(BIN)/python -m bench.run.overhead --fast

# Runs with whatever Python holds PyTorch on the GPU machine (no set-up, no network there).
gpu-check:
	bash bench/gpu_check.sh $(OUT) $(ARGS)

clean:
	rm -rf $(VENV) $(MX_VENV) $(FLEET_VENV) $(SERVE_VENV) .pytest_cache .ruff_cache .benchmarks *.egg-info
