#!/usr/bin/env bash
# Image denoising: bottleneck against the noisy input, Gaussian and median filters and
# non-local means (scikit-image) on the same noisy images: scikit-image's photographs
# (train on 12, test on 6 others) and Fashion-MNIST (train on the training set, test on
# test images), Gaussian noise at sigma 0.05, 0.1 and 0.2. Prints PSNR / SSIM.
# Usage: bash bench/denoise.sh [--datasets natural,fmnist] [--sigmas 0.1,0.2] [--train-args=...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
cp "$root/target/release/bottleneck" "${TMPDIR:-/tmp}/bottleneck-bench-denoise"
exec "$py" "$root/bench/denoise.py" --bin "${TMPDIR:-/tmp}/bottleneck-bench-denoise" \
  --work "$root/bench/out/denoise" "$@"
