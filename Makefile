# diptych — the two commands are `make run` and `make test`; everything else here supports them.
#
# Everything fetched from a registry lives in $(CACHE), outside the clone, and is skipped when
# already there: a virtualenv with the torch wheel (libtorch for the training crate), the ONNX
# Runtime shared library from the onnxruntime wheel, and a virtualenv for the Python test peers.

SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/diptych
PYTHON ?= python3
TORCH_VERSION := 2.13.0
ORT_VERSION := 1.31.0

TORCH_VENV := $(CACHE)/torch-venv
PY_VENV := $(CACHE)/py-venv
ORT_DIR := $(CACHE)/onnxruntime-$(ORT_VERSION)
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
TORCH_LIB = $(shell ls -d $(TORCH_VENV)/lib/python3*/site-packages/torch/lib 2>/dev/null)

export CARGO_TARGET_DIR ?= $(CACHE)/target
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(TORCH_VENV)/bin:$(PATH)
export ORT_DYLIB_PATH ?= $(ORT_LIB)
export LD_LIBRARY_PATH := $(TORCH_LIB):$(LD_LIBRARY_PATH)

MODEL ?= models/phantom-v1
TRAIN_CONFIG ?= training/configs/phantom-v1.toml

.PHONY: run test build eval train-default deps deps-torch deps-ort deps-py lint fmt clean-cache

## run: build the service and start it on the shipped model, a local data folder and default ports.
run: deps-ort
	cargo build --release -p diptych-service
	$(CARGO_TARGET_DIR)/release/diptych serve --model $(MODEL) --data-dir data

## test: every test of the workspace, training and ONNX parity included, plus formatting and lints.
test: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace --release

## eval: score the shipped model on 1000 held-out phantom slices through ONNX Runtime (JSON last).
eval: deps
	cargo build --release -p diptych-training
	$(CARGO_TARGET_DIR)/release/diptych-train eval --model $(MODEL) --n 1000 --json

## train-default: train the default bundle models/phantom-v1 on the phantom generator (CPU, ~1 h).
train-default: deps
	cargo build --release -p diptych-training
	$(CARGO_TARGET_DIR)/release/diptych-train train --config $(TRAIN_CONFIG) --out $(CACHE)/runs/phantom-v1
	$(CARGO_TARGET_DIR)/release/diptych-train export --checkpoint $(CACHE)/runs/phantom-v1/last.ot --config $(TRAIN_CONFIG) --out $(MODEL)

deps: deps-torch deps-ort deps-py

## deps-torch: libtorch for tch, from the torch wheel on PyPI (CPU and CUDA kernels in one wheel).
deps-torch: $(TORCH_VENV)/.ok
$(TORCH_VENV)/.ok:
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) numpy
	touch $@

## deps-ort: the ONNX Runtime shared library, unpacked from the onnxruntime wheel on PyPI.
deps-ort: $(ORT_LIB)
$(ORT_LIB):
	mkdir -p $(ORT_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: onnxruntime==$(ORT_VERSION) -d $(ORT_DIR)/wheel
	cd $(ORT_DIR) && $(PYTHON) -m zipfile -e wheel/onnxruntime-$(ORT_VERSION)-*.whl unpacked
	cp $(ORT_DIR)/unpacked/onnxruntime/capi/libonnxruntime*.so* $(ORT_DIR)/
	rm -rf $(ORT_DIR)/unpacked

## deps-py: the Python peers of the tests (gRPC client stubs, numpy).
deps-py: $(PY_VENV)/.ok
$(PY_VENV)/.ok: Makefile
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet grpcio grpcio-tools grpcio-health-checking grpcio-reflection numpy
	touch $@

lint:
	cargo fmt --all
	cargo clippy --workspace --all-targets -- -D warnings

clean-cache:
	rm -rf $(CACHE)
