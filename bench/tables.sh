#!/usr/bin/env bash
# Tables: detection AUROC (wine, digits, Fashion-MNIST as 784 columns) against PCA,
# IsolationForest and the 5-nearest-neighbour distance, imputation RMSE against mean,
# KNNImputer and IterativeImputer, and 1-NN accuracy of 16- and 32-dimensional codes against
# PCA; every baseline computed in the same run on the same split.
# Usage: bash bench/tables.sh [--tasks detect,impute,reduce] [--datasets wine,digits,fmnist]
# [--train-args="--vae"]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
exec "$py" "$root/bench/tables.py" --bin "$root/target/release/bottleneck" "$@"
