#!/usr/bin/env bash
# Load test of `bottleneck serve` with wrk on loopback: 128x128 board images posted to
# /v1/score at concurrency 1, 8 and 32 (requests/s, p50/p99), RSS before and after 100,000
# requests, and the same model scoring in-process beside it. See bench/serve_load.py.
# Usage: bash bench/serve_load.sh [--duration 20] [--total 100000] [--workers N]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v wrk >/dev/null; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --manifest-path "$root/Cargo.toml" -q
# A copy, so rebuilding the workspace meanwhile does not swap the binary under the test.
bin="$(mktemp -d)/bottleneck"
cp "$root/target/release/bottleneck" "$bin"
work="$root/bench/out/serve"
if [ ! -f "$work/model.safetensors" ]; then
  "$bin" boards "$work/boards" --size 128 --train 200 --test-good 10 --per-defect 2 --seed 3
  # Default settings but few epochs: the load test needs the default network, not a good one.
  "$bin" train "$work/boards" -o "$work/model.safetensors" --epochs 3
fi
exec python3 "$root/bench/serve_load.py" --bin "$bin" --model "$work/model.safetensors" \
  --image "$work/boards/test/good/000.png" "$@"
