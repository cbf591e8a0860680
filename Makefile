# Two entry points, both in the README: `make book` (set up, then run the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data/ml-1m

.PHONY: setup book test clean

# A virtual environment with the project and its pinned dependencies (pyproject.toml is the one
# place versions live); re-made when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job on the embedded default (ML-1M from its PyPI wheel): prepare the data, execute
# the notebooks with papermill into book/executed/, build the HTML book (offline, strict).
book: setup
	$(BIN)/sprec data prepare ml-1m --out $(DATA)
	$(BIN)/sprec reference $(DATA)
	$(BIN)/sprec book run
	$(BIN)/sprec book build

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
