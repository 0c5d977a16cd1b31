# stridelab: `make help` lists the targets. Every target installs the project first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stridelab-installed
# torch/torchvision as this machine provides them (CUDA build, from local wheels). Elsewhere, e.g.:
#   make install TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
ARGS ?=
DIR ?= logs
NAME ?= demo

.DEFAULT_GOAL := help
.PHONY: help install test format demo study sweep aggregate train bench gpu-check tensorboard clean

help: ## list the targets
	@echo "stridelab: experiment harness for CNN downsampling studies"
	@echo
	@grep -E '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo
	@echo "  Variables: ARGS='hydra overrides' (demo, study, sweep, train; bench: its options, e.g. ARGS=--quick),"
	@echo "             NAME=study (study),"
	@echo "             DIR=folder (aggregate, tensorboard, gpu-check), TORCH_SPEC (install)"

install: $(STAMP) ## create .venv and install stridelab (editable) with its dependencies

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "stridelab: installing torch ($(TORCH_SPEC)) and dependencies into $(VENV) (first time: a few minutes)"
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

test: install ## lint and format check (ruff), then the test suite (CPU, offline, under 5 minutes on 2 cores; .ci/run adds the sweep-fault, launcher and SLURM tests)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not slurm and not launchers and not sweeps"

format: install ## format the code and fix what the linter can (ruff)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install ## the demo study: redgreen, shapes10 and converted-ResNet grids, offline, CPU, < 10 min; prints the summary
	$(BIN)/python -m stridelab.study demo $(ARGS)

study: install ## run a study of experiments/: make study NAME=kayhan_redgreen [ARGS="trainer=gpu"]
	$(BIN)/python -m stridelab.study $(NAME) $(ARGS)

sweep: install ## the main CIFAR-10 study (padding_x_downsampling; one GPU, hours)
	$(BIN)/python -m stridelab.study padding_x_downsampling $(ARGS)

aggregate: install ## tables and plots of every run under DIR: make aggregate DIR=logs/multiruns/<sweep>
	$(BIN)/python -m stridelab.aggregate $(DIR)

train: install ## one training run: make train ARGS="data=shapes10 downsample=blurpool padding=reflect"
	$(BIN)/python -m stridelab.train $(ARGS)

bench: install ## performance: bare loop vs stridelab vs torchvision/PIL, run costs (~5 min on 2 cores); docs/performance.md
	$(BIN)/python -m stridelab.bench $(ARGS)

gpu-check: install ## every GPU check in one command, report in DIR (default logs/gpu-check; ARGS=--dry-run: CPU, tiny)
	scripts/gpu-check $(if $(filter logs,$(DIR)),logs/gpu-check,$(DIR)) $(ARGS)

tensorboard: install ## open TensorBoard on DIR (default logs/; a study: DIR=logs/studies/demo)
	$(BIN)/tensorboard --logdir $(DIR)

clean: ## remove logs/ and caches (keeps .venv and data/)
	rm -rf logs outputs multirun .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
