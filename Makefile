# Two commands set a fresh machine up and run everything:
#   make demo   creates .venv, then runs the whole loop on the embedded scene world
#   make test   creates .venv, then runs the whole test suite (slow tests included) and lists the 15 slowest
# torch is pinned here only (the CPU build that lies on these machines' disk);
# setup.cfg asks for torch>=2.4 so GPU users keep their own build.
PYTHON ?= python3
VENV ?= .venv
TORCH_PIN ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test env clean

$(BIN)/hf-negationclip: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

env: $(BIN)/hf-negationclip

demo: env
	$(BIN)/hf-negationclip demo --out runs/demo

test: env
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) runs
