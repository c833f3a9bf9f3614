#!/usr/bin/env bash
# Throughput of the same dense table autoencoder in bottleneck and in PyTorch (CPU, 2
# threads): training and scoring rows/s and their ratio (medians of three alternated runs a
# side), at three widths (13, 64 and 784 features: the wine, digits and Fashion-MNIST shapes).
# Usage: bash bench/throughput_tables.sh [--shapes 13:20000,64:20000,784:5000 --batch 64 --epochs 3 --repeats 3]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(BENCH_TORCH=1 bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q --example throughput_tables
exec "$py" "$root/bench/throughput_tables.py" \
  --example "$root/target/release/examples/throughput_tables" "$@"
