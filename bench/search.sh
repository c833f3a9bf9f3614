#!/usr/bin/env bash
# Similarity search on Fashion-MNIST: precision@10 by class of bottleneck codes against raw
# pixels and PCA of the same dimension (index the training set, query with the test set),
# recall of the HNSW graph against exact search; then query latency and recall of exact
# and graph search at catalogue sizes up to 60,000 (examples/search_latency.rs).
# Usage: bash bench/search.sh [--train-args=...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q --bin bottleneck --example search_latency
bin="${TMPDIR:-/tmp}/bottleneck-bench-search"
cp "$root/target/release/bottleneck" "$bin"
"$py" "$root/bench/search.py" --bin "$bin" --work "$root/bench/out/fmnist" "$@"
"$root/target/release/examples/search_latency" "$root/bench/out/fmnist/all.bnidx" \
  "$root/bench/out/fmnist/test"
