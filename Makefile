# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv on first use; later runs start at once (the stamp file is newer than the
# files that define the environment).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= outputs

.PHONY: install demo test lint docs benchmarks clean

install: $(STAMP)

$(STAMP): pyproject.toml scbank/pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, from the pinned CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test,dev,docs]"
	# scbank is a dependency of scformer-scvi (installed from ./scbank); make it editable for development.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e ./scbank
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m scformer_scvi.demo --output $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/sphinx-build -M html docs docs/_build -W --keep-going

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/tokenization.py
	$(BIN)/python benchmarks/training.py

clean:
	rm -rf $(VENV) docs/_build outputs .pytest_cache
