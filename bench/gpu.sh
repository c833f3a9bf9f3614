#!/usr/bin/env bash
# GPU figures against PyTorch CUDA on the same card, in one run. Two steps, because the GPU
# machine has no Rust toolchain and no network:
#
#   bash bench/gpu.sh prepare   # here (CPU machine): builds the Vulkan binaries, fetches the
#                               # Vulkan loader's .deb files, writes the data, all into .gpu/
#   bash bench/gpu.sh run       # there (GPU machine, .gpu/ carried): builds nothing, prints
#                               # every figure, writes logs to $OUT (or .gpu/out)
#
# `run` prints: training and scoring samples/s of bench/throughput.sh's network (64x64x3,
# widths 32-64-128-128, latent 64) at batch 32 and 256, bottleneck on Vulkan beside PyTorch
# on CUDA, with each side's first-step seconds (shader compilation, cuDNN set-up); the wall
# time of the default `train` on Fashion-MNIST class 0 on the GPU and its AUROC beside the
# CPU-trained model's (trained by `prepare`); and CPU-vs-GPU agreement: the CPU-trained model
# scored on the GPU against its CPU scores (largest relative difference, verdicts that differ).
# BENCH_DEVICE=cpu runs the `run` step on the CPU (both sides) to check the script itself.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
gpu="$root/.gpu"
step="${1:-}"

prepare() {
  grep -qx '/.gpu/' "$root/.git/info/exclude" 2>/dev/null || echo '/.gpu/' >>"$root/.git/info/exclude"
  mkdir -p "$gpu/gl" "$gpu/data"
  # The Vulkan loader and GL dispatch libraries the NVIDIA ICD needs (../shared/gpu/README.md).
  if ! ls "$gpu"/gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p /tmp/amd64/partial
    local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    apt-get $o update -qq
    (cd "$gpu/gl" && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  fi
  CARGO_TARGET_DIR="$root/target/vk" cargo build --release --manifest-path "$root/Cargo.toml" -q \
    --features bottleneck/vulkan --bin bottleneck --example throughput
  gzip -c "$root/target/vk/release/bottleneck" >"$gpu/bottleneck.gz"
  gzip -c "$root/target/vk/release/examples/throughput" >"$gpu/throughput.gz"
  local bin="$root/target/vk/release/bottleneck"
  [ -d "$gpu/data/boards" ] || "$bin" --device cpu -q boards "$gpu/data/boards" --train 512 --seed 1
  # Fashion-MNIST class 0 in the MVTec layout (bench/fashion_mnist.py's protocol), as PNGs.
  local py
  py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
  if [ ! -d "$gpu/data/fmnist0" ]; then
    [ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] ||
      { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }
    "$py" - "$gpu/data/fmnist0" <<'PY'
import gzip, os, sys
import numpy as np
from PIL import Image
src, out = "/usr/share/datasets/fashion-mnist", sys.argv[1]
def idx(name, off):
    with gzip.open(os.path.join(src, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=off)
for part, pre in (("train", "train"), ("test", "t10k")):
    x = idx(f"{pre}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = idx(f"{pre}-labels-idx1-ubyte.gz", 8)
    for i, (img, lab) in enumerate(zip(x, y)):
        if part == "train" and lab != 0:
            continue
        d = os.path.join(out, part, "good" if lab == 0 else f"class{lab}")
        os.makedirs(d, exist_ok=True)
        Image.fromarray(img, "L").save(os.path.join(d, f"{i:05d}.png"))
PY
  fi
  # The CPU reference: the default model on class 0, its wall time, eval and test scores.
  if [ ! -f "$gpu/data/cpu.json" ]; then
    local t0 t1
    t0=$(date +%s.%N)
    "$bin" --device cpu -q train "$gpu/data/fmnist0" -o "$gpu/data/cpu.safetensors"
    t1=$(date +%s.%N)
    "$bin" --device cpu -q eval "$gpu/data/cpu.safetensors" "$gpu/data/fmnist0" >"$gpu/data/cpu.json"
    "$bin" --device cpu -q score "$gpu/data/cpu.safetensors" "$gpu/data/fmnist0/test" \
      -o "$gpu/data/cpu_scores.csv"
    echo "cpu train s: $(awk "BEGIN{print $t1 - $t0}")" >"$gpu/data/cpu_train_seconds"
  fi
  du -sh "$gpu"
  echo "ready: carry .gpu and run 'bash bench/gpu.sh run' on the GPU machine"
}

run() {
  local out="${OUT:-$gpu/out}" dev="${BENCH_DEVICE:-gpu}"
  mkdir -p "$out" "$gpu/bin"
  gunzip -c "$gpu/bottleneck.gz" >"$gpu/bin/bottleneck"
  gunzip -c "$gpu/throughput.gz" >"$gpu/bin/throughput"
  chmod +x "$gpu/bin/"*
  local ours=vulkan
  if [ "$dev" = gpu ]; then
    for f in "$gpu"/gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  else
    ours=cpu
  fi
  export PYTHONUNBUFFERED=1
  local py="${PYTHON:-python3}"
  for batch in 32 256; do
    echo "== throughput, batch $batch (bottleneck $ours, PyTorch $dev)"
    timeout 300 "$py" "$root/bench/throughput.py" --images "$gpu/data/boards/train/good" \
      --example "$gpu/bin/throughput" --batch "$batch" --epochs 3 --device "$dev" --repeats 1 \
      | tee "$out/throughput_$batch.log" || echo "throughput batch $batch failed or timed out"
  done
  echo "== default train, Fashion-MNIST class 0, on $ours"
  local t0 t1
  t0=$(date +%s.%N)
  timeout 400 "$gpu/bin/bottleneck" --device "$ours" train "$gpu/data/fmnist0" \
    -o "$out/gpu.safetensors" 2>"$out/train.log" || echo "train failed or timed out"
  t1=$(date +%s.%N)
  echo "train wall s on $ours: $(awk "BEGIN{print $t1 - $t0}")  ($(cat "$gpu/data/cpu_train_seconds") on the build machine's 2 cores)"
  tail -n 2 "$out/train.log"
  "$gpu/bin/bottleneck" --device "$ours" -q eval "$out/gpu.safetensors" "$gpu/data/fmnist0" \
    >"$out/gpu.json" || echo "eval failed"
  "$gpu/bin/bottleneck" --device "$ours" -q score "$gpu/data/cpu.safetensors" \
    "$gpu/data/fmnist0/test" -o "$out/cpu_model_on_$ours.csv" || echo "score failed"
  "$py" - "$gpu/data" "$out" "$ours" <<'PY'
import csv, json, sys
data, out, ours = sys.argv[1:]
def auroc(path):
    try:
        return json.load(open(path))["image_auroc"]
    except Exception as e:
        return f"n/a ({e})"
print(f"AUROC class 0: model trained on {ours} {auroc(f'{out}/gpu.json')}, "
      f"trained on cpu {auroc(f'{data}/cpu.json')}")
try:
    # Keyed by file name (unique in this set): the two runs see the folder at other paths.
    key = lambda r: r["path"].rsplit("/", 1)[-1]
    a = {key(r): r for r in csv.DictReader(open(f"{data}/cpu_scores.csv"))}
    b = {key(r): r for r in csv.DictReader(open(f"{out}/cpu_model_on_{ours}.csv"))}
    rel = max(abs(float(a[k]["score"]) - float(b[k]["score"])) / max(abs(float(a[k]["score"])), 1e-12)
              for k in a)
    flips = sum(a[k]["is_anomaly"] != b[k]["is_anomaly"] for k in a)
    print(f"CPU-trained model, cpu vs {ours} scores on {len(a)} images: "
          f"max relative difference {rel:.2e}, verdicts that differ {flips}")
except Exception as e:
    print(f"agreement: n/a ({e})")
PY
}

case "$step" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: bash bench/gpu.sh prepare|run" >&2; exit 2 ;;
esac
