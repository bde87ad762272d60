#!/usr/bin/env bash
# The trainer's GPU check as one prepared run (a few minutes on one H100/H200):
#   1. the vgg16 bench at batch 100: single-task step, interleaved MAXL iteration with the
#      double-backward and the jvp meta-gradient, fused + jvp (ratios to the single step);
#   2. jvp against double-backward on the GPU in f32 (fails above 1e-4 relative);
#   3. a short MAXL training run of the paper-sized protocol (vgg16, Fashion-MNIST padded to
#      32×32, grey replicated to RGB, crop 4 + flip) with the data kept on the device: one epoch,
#      resumed from its checkpoint for a second, exported to ONNX; and the same first epoch with
#      batches assembled on the host, for comparison;
#   4. the data-parallel path on the one GPU: the NCCL process group as a world of one rank
#      (torchrun's variables set by hand), a 20-step MAXL run through it, and the bench worker's
#      fused + jvp step with its all-reduce time and bytes (1 vs 2 ranks needs two GPUs).
#
#   scripts/gpu_check.sh BIN DATA OUT [DEVICE]
#
# BIN: a release maxl-train (no cargo needed: the script runs where only the binary and
# libtorch are, e.g. with LD_LIBRARY_PATH set to a torch 2.11 lib/). DATA: a folder with the
# four Fashion-MNIST IDX files (*-ubyte.gz). OUT: where the log, the runs and the summary go.
# DEVICE: cuda (default) or cpu: the same steps with the small preset and a few images, to try
# the script on a machine without a GPU.
set -euo pipefail
[[ $# -ge 3 ]] || { sed -n '2,17p' "$0"; exit 2; }
bin=$1 data=$2 out=$3 device=${4:-cuda}
[[ -x $bin ]] || { echo "gpu_check: $bin: not an executable maxl-train" >&2; exit 2; }
[[ -d $data ]] || { echo "gpu_check: $data: no such folder" >&2; exit 2; }
mkdir -p "$out"
# The data folder as a single-quoted YAML string.
yaml_data="'${data//\'/\'\'}'"
log="$out/gpu_check.log"
: > "$log"
step() { echo "== $*" | tee -a "$log"; }
run() { echo "\$ $*" >> "$log"; "$@" 2>&1 | tee -a "$log"; }

if [[ $device == cuda ]]; then
  # Config 3's protocol: 28×28 grey padded to 32×32, replicated to RGB, crop 4 + flip.
  preset=vgg16 train_limit=5000 test_limit=2000 iters=20 repeats=3
  shape="pad: 2, grey_to_rgb: true, crop_padding: 4"
  command -v nvidia-smi > /dev/null && run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
else
  preset=small train_limit=400 test_limit=200 iters=2 repeats=1
  shape="crop_padding: 2"
fi
cat > "$out/short.yaml" <<EOF
method: maxl
schedule: reference
meta_gradient: jvp
model: {preset: $preset}
dataset: {kind: fashion-mnist, path: $yaml_data, validation_fraction: 0.1, train_limit: $train_limit,
          test_limit: $test_limit, $shape, horizontal_flip: true}
hierarchy: {psi_per_class: 5}
epochs: 1
batch_size: 100
EOF

step "bench: $preset, batch 100, $device"
run "$bin" bench --preset "$preset" --device "$device" --batch-size 100 --iters "$iters" \
  --warmup 3 --repeats "$repeats" \
  --modes single,interleaved-double-backward,interleaved-jvp,fused-jvp,weighted-interleaved-jvp,weighted-fused-jvp

step "jvp vs double-backward meta-gradient, f32, $device"
run "$bin" bench --check-jvp --preset "$preset" --device "$device" --batch-size 100

step "short training run, data kept on the device: 1 epoch, then resumed for a 2nd, exported"
rm -rf "$out/run-device" "$out/run-host"
run "$bin" --config "$out/short.yaml" --device "$device" --data-placement device --quiet \
  --out "$out/run-device"
run "$bin" --resume "$out/run-device" --epochs 2 --device "$device" --data-placement device \
  --quiet --export "$out/run-device/models"
ls -l "$out/run-device/models" | tee -a "$log"

# The batches are the same numbers; on CUDA, cuDNN's benchmark mode may still pick other kernels
# in the two processes, so expect the epochs to agree closely, not bit for bit.
step "the same first epoch, batches assembled on the host"
run "$bin" --config "$out/short.yaml" --device "$device" --data-placement host --quiet \
  --out "$out/run-host"

step "data-parallel: NCCL process group, world size 1, 20 MAXL steps on $device"
backend=nccl
[[ $device == cuda ]] || backend=gloo
rm -rf "$out/run-group"
RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29561 \
  run "$bin" --config "$out/short.yaml" --device "$device" --dist-backend "$backend" \
  --dist-timeout 120 --max-steps 20 --quiet --out "$out/run-group"
step "data-parallel bench worker: fused + jvp, $preset, one rank of a $backend group"
RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29562 \
  run "$bin" bench --worker fused-jvp --preset "$preset" --device "$device" --batch-size 100 \
  --iters "$iters" --warmup 3

step "maxl-weighted: 20 steps of the weighted generator on $device, exported"
rm -rf "$out/run-weighted"
run "$bin" --config "$out/short.yaml" --method maxl-weighted --device "$device" --max-steps 20 \
  --quiet --out "$out/run-weighted" --export "$out/run-weighted/models"

step "summary"
{
  echo "epoch 1, data on the device: $(sed -n 2p "$out/run-device/metrics.csv")"
  echo "epoch 1, data on the host:   $(sed -n 2p "$out/run-host/metrics.csv")"
  echo "epoch 2 (resumed):           $(sed -n 3p "$out/run-device/metrics.csv")"
  echo "20 steps, $backend group of 1: $(sed -n 2p "$out/run-group/metrics.csv")"
  echo "20 steps, maxl-weighted:     $(sed -n 2p "$out/run-weighted/metrics.csv")"
  echo "metrics.csv columns:         $(sed -n 1p "$out/run-device/metrics.csv")"
} | tee -a "$log" | tee "$out/summary.txt"
