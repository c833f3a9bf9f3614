#!/usr/bin/env bash
# One-class Fashion-MNIST: for each class, train bottleneck on that class's training images
# and score the whole test set (that class = normal, the other nine = anomalies). PCA
# reconstruction error and 1-nearest-neighbour distance in pixel space are computed in the
# same run on the same split. Usage: bash bench/fashion_mnist.sh [--classes 0,1,...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
exec "$py" "$root/bench/fashion_mnist.py" --bin "$root/target/release/bottleneck" "$@"
