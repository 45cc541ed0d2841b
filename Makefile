# magnet Makefile: creates its own virtual environment, installs torch first, then the project.
# GPU users: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" install
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= data
export WANDB_MODE ?= offline
export MPLBACKEND ?= Agg

DEMO_DIR ?= outputs/demo

.PHONY: install test demo data bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,video]"
	@touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The embedded synthetic dataset (built once into $(DATA_DIR)/synthetic, cached).
data: install
	$(PY) -m magnet.data.synthetic --out $(DATA_DIR)

# End to end on the embedded synthetic data: data -> tiny VQ-VAE -> tiny DFoT -> samples of the held-out clips for
# joint / partner prediction / live motion control / inbetweening -> evaluation beside baselines -> videos ->
# $(DEMO_DIR)/REPORT.md. A second run reuses finished steps; `make demo DEMO_FLAGS=--force` redoes them.
demo: install
	$(PY) -m magnet.demo --out $(DEMO_DIR) --data $(DATA_DIR) $(DEMO_FLAGS)

bench: install
	$(PY) bench/bench_datamodule.py
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_vqvae.py
	$(PY) bench/bench_dfot.py --sizes paper tiny --steps 5
	$(PY) bench/bench_evaluate.py

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) outputs .pytest_cache
