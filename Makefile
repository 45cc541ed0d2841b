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

# Variables of the wrapper targets below; set any of them on the command line (make train-vqvae DATASET=dd100).
DATASET ?=        # dataset=<name> (conf/dataset/); empty: the config's default (synthetic)
MODEL ?=          # model=paper | tiny; empty: the stage's default (paper)
TRAINER ?=        # trainer=cpu | gpu | ddp; empty: default (auto)
VQVAE_CKPT ?=     # train-dfot: the stage-1 vqvae.safetensors (or its run directory)
CKPT ?=           # sample: the DFoT run directory, dfot.safetensors or last.ckpt
TASK ?=           # sample: task=<name> (conf/task/); empty: joint
SCHEDULE ?=       # sample: schedule=<name> (conf/schedule/); empty: the task's own
SAMPLING ?=       # sample: sampling=default | fast (conf/sampling/); empty: default
RUN ?=            # evaluate / render / view: a directory of sampled *.npz outputs
LAUNCHER ?=       # sweep: hydra/launcher=slurm | submitit_local; empty: one job after another, here
SWEEP ?= experiment=demo_vqvae 'stage.lr=choice(5e-4,1e-3)'
ARGS ?=           # any further Hydra overrides, e.g. ARGS="stage.total_steps=1000 logger=many"

opt = $(if $(strip $(2)),$(1)=$(strip $(2)))

.PHONY: install test demo data bench lint clean help train-vqvae train-dfot sample evaluate render view sweep

help:
	@echo "magnet: make <target> [VARIABLE=value ...]"
	@echo ""
	@echo "  install       create .venv/ with torch ($(TORCH_SPEC)) and the project (dev, video, sweep extras)"
	@echo "  test          the full test suite (pytest)"
	@echo "  lint          ruff"
	@echo "  data          build the synthetic dataset into DATA_DIR (default: data)"
	@echo "  demo          python -m magnet.demo: synthetic data -> tiny models -> samples -> evaluation -> videos"
	@echo "                -> DEMO_DIR/REPORT.md, on CPU  [DEMO_DIR DATA_DIR DEMO_FLAGS]"
	@echo "  bench         the benchmarks under bench/"
	@echo "  train-vqvae   python train.py stage=vqvae  [DATASET MODEL TRAINER ARGS]"
	@echo "  train-dfot    python train.py stage=dfot stage.vqvae_ckpt=VQVAE_CKPT  [DATASET MODEL TRAINER ARGS]"
	@echo "  sample        python sample.py ckpt=CKPT  [TASK SCHEDULE SAMPLING DATASET ARGS]"
	@echo "  evaluate      python evaluate.py run_dir=RUN  [ARGS]"
	@echo "  render        python -m magnet.visualize.render RUN  [ARGS]  (videos of sampled outputs)"
	@echo "  view          python -m magnet.visualize.view RUN  [ARGS]  (interactive viewer)"
	@echo "  sweep         python train.py -m SWEEP  [LAUNCHER ARGS]  (default SWEEP: $(SWEEP))"
	@echo "  clean         remove .venv/, outputs/ and .pytest_cache/"
	@echo "  help          this list"
	@echo ""
	@echo "Examples: make train-vqvae DATASET=dd100 TRAINER=gpu"
	@echo "          make train-dfot DATASET=dd100 VQVAE_CKPT=outputs/vqvae/dd100/<run>/vqvae.safetensors"
	@echo "          make sweep SWEEP=\"stage=vqvae dataset=dd100 'stage.lr=choice(1e-4,2e-4)'\" LAUNCHER=slurm \\"
	@echo "               ARGS=\"hydra.launcher.partition=gpu trainer=gpu\""

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[dev,video,sweep]"
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
	$(PY) bench/bench_sample.py --size paper
	$(PY) bench/bench_sample.py --size tiny
	$(PY) bench/bench_render.py
	@if [ -f $(DEMO_DIR)/dfot/dfot.safetensors ]; then \
		$(PY) bench/bench_fast_preset.py --ckpt $(DEMO_DIR)/dfot --data $(DATA_DIR); \
	else echo "bench_fast_preset.py skipped: it needs the demo checkpoint (make demo first)"; fi

lint: install
	$(VENV)/bin/ruff check .

train-vqvae: install
	$(PY) train.py stage=vqvae paths.data_dir=$(DATA_DIR) $(call opt,dataset,$(DATASET)) $(call opt,model,$(MODEL)) \
		$(call opt,trainer,$(TRAINER)) $(ARGS)

train-dfot: install
	$(PY) train.py stage=dfot paths.data_dir=$(DATA_DIR) $(call opt,stage.vqvae_ckpt,$(VQVAE_CKPT)) \
		$(call opt,dataset,$(DATASET)) $(call opt,model,$(MODEL)) $(call opt,trainer,$(TRAINER)) $(ARGS)

sample: install
	$(PY) sample.py paths.data_dir=$(DATA_DIR) $(call opt,ckpt,$(CKPT)) $(call opt,task,$(TASK)) \
		$(call opt,schedule,$(SCHEDULE)) $(call opt,sampling,$(SAMPLING)) $(call opt,dataset,$(DATASET)) $(ARGS)

evaluate: install
	$(PY) evaluate.py $(call opt,run_dir,$(RUN)) $(ARGS)

render: install
	$(PY) -m magnet.visualize.render $(RUN) $(ARGS)

view: install
	$(PY) -m magnet.visualize.view $(RUN) $(ARGS)

sweep: install
	$(PY) train.py -m paths.data_dir=$(DATA_DIR) $(SWEEP) $(call opt,hydra/launcher,$(LAUNCHER)) $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
