# Two commands on a fresh clone: `make run` and `make test`. Everything is installed into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CADX := $(VENV)/bin/cadx
STAMP := $(VENV)/.installed
SHARED := ../shared/datasets
PNEUMONIAMNIST := $(SHARED)/pneumoniamnist/pneumoniamnist_28.npz
RUN_DIR := runs/pneumoniamnist-small-cnn

.PHONY: install run serve train-demo test lint clean

# torch first (the CPU wheel present on these machines), then the project: pip never pulls the CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,ray]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the web system on the shipped models (models/); prints the URL and, on first start, the admin
# password. Ctrl-C stops it; studies stay in ./cadx-data.
run: install
	$(CADX) serve --models models

# A quick real training run: the seed's small CNN on PneumoniaMNIST (about 3 minutes on 2 CPU cores).
train-demo: install
	@if [ ! -f "$(PNEUMONIAMNIST)" ]; then \
	  echo "make train-demo trains on $(PNEUMONIAMNIST) (PneumoniaMNIST, MedMNIST v2), which is absent."; \
	  echo "Put the shared datasets folder beside this repository, or run: $(CADX) train DATA --output DIR"; \
	  exit 1; fi
	$(CADX) train $(PNEUMONIAMNIST) --recipe small-cnn --class-names normal,pneumonia --output $(RUN_DIR) --overwrite
	$(CADX) evaluate $(RUN_DIR)
	@echo "Results: $(RUN_DIR) (best.ckpt, metrics.json, report.md, curves.png, confusion_matrix.png, roc.png)"

serve: run

test: install
	-@bash scripts/install_system_deps.sh
	$(VENV)/bin/pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf runs .pytest_cache
