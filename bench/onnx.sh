#!/usr/bin/env bash
# The ONNX export against bottleneck itself, in one run: scoring throughput of onnxruntime
# (CPU, 2 threads) on the exported graph and of bottleneck (in-process, and the CLI on
# files) on bench/throughput.sh's network (64x64 RGB boards, width 32, latent 64, default
# scoring: SSIM map, standardised, max, latent kNN) and on a 64-column table network; the
# model-file and ONNX sizes; how far the two scores are apart.
# Usage: bash bench/onnx.sh [--images 512 --rows 20000 --repeats 5]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
"$(dirname "$py")/pip" install -q --disable-pip-version-check onnx onnxruntime
cargo build --release --manifest-path "$root/Cargo.toml" -q --bins --example score_in_memory
work="$root/bench/out/onnx"
mkdir -p "$work"
if [ ! -d "$work/boards" ]; then
  "$root/target/release/bottleneck" --quiet boards "$work/boards" --train 512 --seed 1
fi
exec "$py" "$root/bench/onnx_export.py" --bin "$root/target/release/bottleneck" \
  --example "$root/target/release/examples/score_in_memory" --work "$work" "$@"
