# One-command setup and test. torch and llama-cpp-python are pinned in constraints.txt (used only
# here). llama-cpp-python has no binary wheels: it is built from source once (10-15 min on 2 cores)
# into $(WHEELS) and reused by every later install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
WHEELS ?= $(HOME)/.cache/llm-explorer/wheels
LLAMA_VERSION := 0.3.36
STAMP := $(VENV)/.setup-done

.PHONY: setup test lint demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml plugins/openai/pyproject.toml plugins/llamacpp/pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || \
		$(PIP) wheel --no-deps llama-cpp-python==$(LLAMA_VERSION) -w $(WHEELS)
	$(PIP) install -c constraints.txt --find-links $(WHEELS) \
		-e '.[dev,box2d,atari,mujoco,ablation-ray]' -e plugins/openai -e plugins/llamacpp
	touch $(STAMP)

# Two workers (pytest-xdist); tests/conftest.py keeps on one worker the tests that share a module or
# session fixture, Ray or a build of tests/plugin_dist. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: setup
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

lint: setup
	$(VENV)/bin/ruff check explorer_pipeline explorer_rundir explorer_ablation tianshou_integration plugins tests benchmarks
	$(VENV)/bin/mypy

demo: setup
	$(VENV)/bin/llm-explorer train --env CartPole-v1 --algo dqn --provider local --out runs/demo

bench: setup
	$(PY) benchmarks/bench_submit.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
