# SAR-Optical Matcher. `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
PLUGIN := sar_optical_matcher
QGIS_PROFILE ?= default
ifeq ($(shell uname -s),Darwin)
QGIS_PLUGINS_DIR ?= $(HOME)/Library/Application Support/QGIS/QGIS3/profiles/$(QGIS_PROFILE)/python/plugins
else
QGIS_PLUGINS_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/$(QGIS_PROFILE)/python/plugins
endif
# the paper's experiment: epochs per supervision level (12: 8.5-17 min each, 62 min for the five on 2 CPU cores, bf16)
EXPERIMENT_EPOCHS ?= 12
export QT_QPA_PLATFORM ?= offscreen

.PHONY: help install test test-fast demo lint format typecheck zip deploy train-default evaluate experiment bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## install Debian QGIS/GDAL packages, .venv and pinned Python deps (idempotent)
	@./scripts/install.sh

test: install ## install if needed, then run the whole test suite (offscreen)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install ## the suite without tests marked slow
	$(PY) -m pytest -q -m "not slow"

demo: install ## run Register SAR to optical with the default model on a synthetic pair generated from a fixed seed
	$(PY) scripts/demo.py --out build/demo

lint: install ## ruff lint + format check, mypy on core/model/training
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

format: install ## apply ruff formatting and safe fixes
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

zip: ## build dist/sar_optical_matcher.zip (the plugin only: code, metadata, LICENSE, model)
	python3 scripts/build_zip.py --out dist/$(PLUGIN).zip  # standard library only: no venv needed

# the zip's files, copied beside the installed copy and swapped in when complete: a failed
# deploy keeps the plugin that was there (it was removed before a copy that could fail)
deploy: zip ## install the plugin into a QGIS profile (QGIS_PROFILE=default)
	python3 scripts/build_zip.py --install "$(QGIS_PLUGINS_DIR)"
	@echo "deployed to $(QGIS_PLUGINS_DIR)/$(PLUGIN); enable it in Plugins > Manage and Install"

# Calibration data: the validation split's real 3MOS scene and the real tiles of the training
# split (labelled as in training), never a held-out test scene; 8 known-offset samples a tile.
CALIBRATION_DATA := --data 3mos:../shared/data/3mos:SEN_water \
	--training-tiles training/configs/default.yaml --samples-per-pair 8
# Correspondence-map smoothing (Gaussian sigma, px) written into the contract at export, chosen
# on the 160 validation samples after training (docs/results.md); training validates raw maps.
MAP_SMOOTHING_PX := 1.0
train-default: install ## train, export, calibrate the shipped default model (config + seed in repo)
	$(PY) -m training train --config training/configs/default.yaml --out runs/default \
		$(if $(wildcard runs/default/checkpoint_last.pt),--resume)
	$(PY) -m training export --checkpoint runs/default/checkpoint_best.pt \
		--out runs/default/model.onnx --name sar-optical-matcher-default \
		--map-smoothing-px $(MAP_SMOOTHING_PX)
	$(PY) scripts/calibrate_confidence.py --model runs/default/model.onnx $(CALIBRATION_DATA) \
		--out $(PLUGIN)/model/default.onnx

HELD_OUT := 3mos:../shared/data/3mos:RCM_city,RCM_plain,SEN_plain,GF3_water,Redarsat_hills
evaluate: install ## evaluate the default model and classical peers on held-out 3MOS tiles
	$(PY) scripts/evaluate.py --data $(HELD_OUT) --samples-per-pair 4 --out build/eval

experiment: install ## the paper's experiment: 100/75/50/25/5 % supervision -> docs/results.md
	$(PY) scripts/run_experiment.py --epochs $(EXPERIMENT_EPOCHS) --samples-per-pair 4 --out runs/experiment --doc docs/results.md

# the commands at the top of docs/performance.md (it ran full 16,641-window per-window maps,
# ~4 GB and minutes each, no 20,000 px pair and no keypoint benchmark)
bench: install ## performance benchmarks: docs/performance.md's commands (figures printed and in build/)
	$(PY) scripts/bench_correspondence.py --reference-windows 4096 --json build/corr.json
	$(PY) scripts/bench_register.py --sizes 2048 4096 8192 20000 --keypoints 200 \
		--json build/register.json
	$(PY) scripts/bench_keypoints.py --size 20000
	$(PY) scripts/bench_train_step.py --json build/train_step.json

clean: ## remove build outputs (keeps .venv)
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache
