# RayDer scaling-law toolkit. `make demo` runs the embedded study; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
NATTEN_SPEC ?= natten==0.21.7

.PHONY: install test test-fast demo validate seed-check bench clean system-deps

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q --no-build-isolation "$(NATTEN_SPEC)"
	$(PIP) install -q -e ".[dev]"
	# lpips only for its linear-layer weights (v0.1/vgg.pth): its torchvision requirement would not import here.
	$(PIP) install -q --no-deps "lpips==0.1.4"
	touch $@

install: $(VENV)/.installed

# Debian packages used by the tests: poppler (PDF -> PNG checks) and a one-node SLURM cluster.
system-deps:
	bash tests/slurm/install-deps.sh

test: install system-deps
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow and not slurm"

demo: install
	$(PY) -m sweeps.demo $(DEMO_ARGS)

# The demo plus its held-out run(s): the law fitted on the grid alone predicts a run beyond the grid (reuses the
# demo's finished runs).
validate: install
	$(PY) -m sweeps.demo --validate $(DEMO_ARGS)

# The demo and `make validate` with seed 0 and seed 1 (its own store and runs), the comparison of the two laws
# (effective exponents), the seed noise per D, and 200 simulated seeds of seed 0's study with that noise (how often the
# rule holds when only the seed changes: sweeps/seed_noise.py). DEMO_ARGS takes --set / --clips here (both seeds).
seed-check: install
	$(PY) -m sweeps.seed_check --validate --simulate 200 $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) data runs results.duckdb reports/out
