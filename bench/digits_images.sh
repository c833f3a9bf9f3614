#!/usr/bin/env bash
# One-class scikit-learn digits as 8x8 images: the detector's score parts and joins against
# PCA and pixel 1-NN (see bench/digits_images.py).
# Usage: bash bench/digits_images.sh [--digits 0,1,2 --seed 0]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q --bins
cd "$root/bench"
exec "$py" digits_images.py --bin "$root/target/release/bottleneck" "$@"
