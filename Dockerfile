# syntax=docker/dockerfile:1
#
# diptych's container images: `diptych serve` on the shipped model (models/synth-v9), its data
# folder a volume at /data, as an unprivileged user. One Dockerfile, two flavours:
#
#   docker build -t REGISTRY/diptych:0.1.0 .                                  # CPU
#   docker build --build-arg FLAVOR=cuda -t REGISTRY/diptych:0.1.0-cuda .     # CUDA + cuDNN
#
# The install steps are the Makefile's (scripts/install-deps.sh): apt packages for the build, and
# the ONNX Runtime library from the onnxruntime or onnxruntime-gpu wheel on PyPI. The final stage
# has no compiler, package cache, pip or Python: the binary, the one library it links beyond the
# C and C++ runtimes (GDCM's 12-bit JPEG decoder), ONNX Runtime and the model.

# cpu | cuda
ARG FLAVOR=cpu
ARG RUST_IMAGE=rust:1.95-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CPU_BASE=debian:bookworm-slim
# onnxruntime-gpu 1.31 is built for CUDA 13 and cuDNN 9. Ubuntu 24.04's glibc (2.39) runs the
# binary built on Debian 12 (2.36).
ARG CUDA_BASE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# --- build: the diptych binary, with the 12-bit JPEG decoder and CharLS compiled in ---
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh build-tools \
    && bash scripts/install-deps.sh jpeg12-dev
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p diptych-service \
    && install -D -m 0755 target/release/diptych /out/bin/diptych \
    && bash scripts/install-deps.sh image-libs target/release/diptych /out/lib

# --- ONNX Runtime: the shared libraries of the wheel of each flavour ---
FROM ${PYTHON_IMAGE} AS ort-cpu
COPY scripts/install-deps.sh /usr/local/bin/install-deps.sh
RUN bash /usr/local/bin/install-deps.sh ort /opt/onnxruntime cpu

FROM ${PYTHON_IMAGE} AS ort-cuda
COPY scripts/install-deps.sh /usr/local/bin/install-deps.sh
RUN bash /usr/local/bin/install-deps.sh ort /opt/onnxruntime gpu

# ort-cpu or ort-cuda, stages of this file (hadolint cannot see through the variable).
# hadolint ignore=DL3006
FROM ort-${FLAVOR} AS ort

# --- the runtime bases ---
FROM ${CPU_BASE} AS base-cpu
FROM ${CUDA_BASE} AS base-cuda

# --- the image: base-cpu or base-cuda above ---
# hadolint ignore=DL3006
FROM base-${FLAVOR}
ARG FLAVOR
LABEL org.opencontainers.image.title="diptych" \
      org.opencontainers.image.description="Content-based retrieval of medical images by normal and abnormal anatomy (${FLAVOR})" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/bin/diptych /usr/local/bin/diptych
COPY --from=build /out/lib/ /usr/local/lib/
COPY --from=ort /opt/onnxruntime/ /opt/onnxruntime/
COPY models/synth-v9/ /opt/diptych/models/synth-v9/
# uid/gid 10001: above the ranges of the base images' own users (Ubuntu's `ubuntu` is 1000);
# the Helm chart runs the pod as the same ids.
RUN ldconfig \
    && groupadd --system --gid 10001 diptych \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home --shell /usr/sbin/nologin diptych \
    && mkdir -p /data \
    && chown 10001:10001 /data
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so \
    RUST_LOG=info
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# gRPC (and gRPC-Web), DICOM, HTTP (metrics, health)
EXPOSE 50051 11112 8080
ENTRYPOINT ["/usr/local/bin/diptych", "serve"]
CMD ["--data-dir", "/data", "--model", "/opt/diptych/models/synth-v9"]
