#!/usr/bin/env bash
# Installs everything maxl needs, idempotently, into a cache directory outside the checkout:
#   * a Python venv (keyed by the pinned versions) with the full PyTorch 2.11.0 — our libtorch for
#     `tch` and the reference for test fixtures — plus onnxruntime 1.31.1, onnx, numpy, safetensors,
#     Pillow (the Python side of `maxl-label bench`), and torchvision 0.26.0 (the release paired
#     with torch 2.11; reference backbones with random weights for the conformance fixtures and
#     the .pth converter), and CUDA 13.0's compiler-support headers (for NCCL in the c10d shim);
#   * the Debian packages dataset-fashion-mnist (the default real dataset) and libgloo-dev (gloo's
#     headers, which the PyTorch wheel lacks: maxl-train's c10d shim for multi-process training
#     compiles against them; nothing links Debian's libgloo);
#   * an env file, sourced by the other scripts and read by the binaries, naming LIBTORCH and
#     the ONNX Runtime library.
# Re-running it when everything is present takes about a second.
set -euo pipefail

TORCH_VERSION=2.11.0
ORT_VERSION=1.31.1
ONNX_VERSION=1.23.2
NUMPY_VERSION=2.4.6
SAFETENSORS_VERSION=0.8.0
PILLOW_VERSION=13.0.0
TORCHVISION_VERSION=0.26.0

CACHE_DIR="${MAXL_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/maxl}"
PY="${MAXL_PYTHON:-python3}"
PY_TAG=$("$PY" -c 'import sys; print(f"py{sys.version_info[0]}{sys.version_info[1]}")')
VENV="$CACHE_DIR/venv-torch${TORCH_VERSION}-ort${ORT_VERSION}-onnx${ONNX_VERSION}-${PY_TAG}"
ENV_FILE="$CACHE_DIR/maxl.env"
FMNIST_DIR=/usr/share/datasets/fashion-mnist

log() { printf 'setup: %s\n' "$*" >&2; }
mkdir -p "$CACHE_DIR"

# Debian packages: the dataset, the font the training plots are labelled with, gloo's headers.
FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
GLOO_HEADER=/usr/include/gloo/config.h
if [ ! -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] || [ ! -f "$FONT" ] || [ ! -f "$GLOO_HEADER" ]; then
  log "installing Debian packages dataset-fashion-mnist fonts-dejavu-core libgloo-dev"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist fonts-dejavu-core libgloo-dev >/dev/null
fi
[ -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ] || { log "Fashion-MNIST not found in $FMNIST_DIR after install"; exit 1; }

# The Python venv. A marker file is written only after every install succeeded, so an
# interrupted run is resumed (pip skips what is already there) rather than trusted.
MARKER="$VENV/.maxl-complete"
if [ ! -f "$MARKER" ]; then
  log "creating venv $VENV (PyTorch $TORCH_VERSION is a ~2.7 GB download; one time only)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q \
    "torch==$TORCH_VERSION" "onnxruntime==$ORT_VERSION" "onnx==$ONNX_VERSION" \
    "numpy==$NUMPY_VERSION" "safetensors==$SAFETENSORS_VERSION"
  touch "$MARKER"
fi
# Pillow, added after the venv's first packages: its own marker, so existing venvs get it too.
PIL_MARKER="$VENV/.maxl-pillow-$PILLOW_VERSION"
if [ ! -f "$PIL_MARKER" ]; then
  log "installing Pillow $PILLOW_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q "pillow==$PILLOW_VERSION"
  touch "$PIL_MARKER"
fi
# torchvision, likewise added later. Each torchvision wheel pins its torch exactly; naming torch
# in the same command makes pip fail rather than swap the venv's torch (our libtorch) for another.
TV_MARKER="$VENV/.maxl-torchvision-$TORCHVISION_VERSION"
if [ ! -f "$TV_MARKER" ]; then
  log "installing torchvision $TORCHVISION_VERSION into $VENV"
  "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
  touch "$TV_MARKER"
fi

# CUDA's compiler-support headers (crt/host_config.h, nv/target), which the torch wheel's CUDA
# packages lack: with them and the nvidia-nccl wheel's nccl.h, maxl-train's c10d shim compiles
# libtorch's NCCL process group (the build falls back to Gloo alone without them). Headers only.
CUDA_HDR_MARKER="$VENV/.maxl-cuda-headers-13.0"
if [ ! -f "$CUDA_HDR_MARKER" ]; then
  log "installing the CUDA 13.0 compiler-support headers into $VENV"
  "$VENV/bin/python" -m pip install -q --no-deps "nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85"
  touch "$CUDA_HDR_MARKER"
fi

SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
LIBTORCH="$SITE/torch"
ORT_LIB="$SITE/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
[ -f "$LIBTORCH/lib/libtorch_cpu.so" ] || { log "libtorch missing: $LIBTORCH/lib/libtorch_cpu.so"; exit 1; }
[ -f "$ORT_LIB" ] || { log "ONNX Runtime library missing: $ORT_LIB"; exit 1; }

# KEY=VALUE lines: sourced by the scripts, parsed by maxl's library discovery.
tmp="$ENV_FILE.tmp.$$"
cat > "$tmp" <<ENV
# Written by scripts/setup.sh; regenerated on every run.
MAXL_VENV=$VENV
MAXL_PYTHON=$VENV/bin/python
LIBTORCH=$LIBTORCH
MAXL_ORT_DYLIB=$ORT_LIB
MAXL_FASHION_MNIST=$FMNIST_DIR
MAXL_PLOT_FONT=$FONT
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE_DIR/target}
ENV
mv "$tmp" "$ENV_FILE"
log "ready: $ENV_FILE"
