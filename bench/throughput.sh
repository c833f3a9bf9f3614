#!/usr/bin/env bash
# Throughput of the same conv autoencoder in bottleneck and in PyTorch (CPU, 2 threads),
# training and scoring samples/s and their ratio (medians of three alternated runs a side),
# on 512 synthetic boards.
# Usage: bash bench/throughput.sh [--size 64 --channels 3 --width 32 --latent 64 --batch 32 --epochs 3 --repeats 3]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(BENCH_TORCH=1 bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q --example throughput
work="$root/bench/out/throughput"
cargo build --release --manifest-path "$root/Cargo.toml" -q
if [ ! -d "$work/boards" ]; then
  "$root/target/release/bottleneck" boards "$work/boards" --train 512 --seed 1
fi
exec "$py" "$root/bench/throughput.py" --images "$work/boards/train/good" \
  --example "$root/target/release/examples/throughput" "$@"
