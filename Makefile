# Set-up is part of every target: each creates .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PROMPT ?= Return a new list containing

.PHONY: demo test lint format lab bench notebooks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

NATIVE := setup.py $(wildcard pi2lab/kernels/native/*.cc pi2lab/kernels/native/*.h)

$(VENV)/.base: pyproject.toml $(NATIVE) | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# llama.cpp for `pi2lab bench peer`, built from source by pip: portable x86 flags (AVX-512 only
# where this CPU has it; AMX off, which VMs may not let a process use)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	$(if $(shell grep -m1 -o avx512f /proc/cpuinfo 2>/dev/null),-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON)

$(VENV)/.dev: pyproject.toml $(NATIVE) | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q -e ".[dev,notebook,reference,peer,lab]"
	touch $@ $(VENV)/.base

demo: $(VENV)/.base
	$(BIN)/pi2lab generate --model builtin --prompt "$(PROMPT)" --max-new-tokens 64

# Last, the slowest: every notebook run with Run All in JupyterLab in Chromium (tests/browser;
# it skips without chromium, `apt-get install chromium`, except under CI, where it fails).
test: $(VENV)/.dev lint
	$(BIN)/python -m pytest tests -q -m "not browser"
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg notebooks -q -p no:cacheprovider
	$(BIN)/python -m pytest tests/browser -q -m browser

lint: $(VENV)/.dev
	$(BIN)/ruff check pi2lab tests
	$(BIN)/ruff format --check pi2lab tests
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff check --fix pi2lab tests
	$(BIN)/ruff format pi2lab tests

lab: $(VENV)/.dev
	$(BIN)/jupyter lab notebooks/

# Re-run the notebooks in smoke mode and keep only the contract cells' outputs.
notebooks: $(VENV)/.dev
	CI=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace notebooks/*.ipynb
	$(BIN)/nbstripout --keep-count notebooks/*.ipynb

bench: $(VENV)/.base
	$(BIN)/pi2lab bench dense

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
