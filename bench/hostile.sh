#!/usr/bin/env bash
# Hostile input against the CLI and the service: damaged and lying files of every kind,
# outputs aimed at inputs, kills mid-write, oversized and malformed requests, slow and idle
# connections. Prints one table (cases by class: clear errors, crashes, silent wrong results,
# leftover files, peak RSS) and the service's requests/s quiet and under 100 slow and 1,000
# idle connections. See bench/hostile.py. Usage: bash bench/hostile.sh [--quick]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --manifest-path "$root/Cargo.toml" -q -p bottleneck-cli
# A copy, so rebuilding the workspace meanwhile does not swap the binary under the test.
bin="$(mktemp -d)/bottleneck"
cp "$root/target/release/bottleneck" "$bin"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
"$(dirname "$py")/pip" install -q --disable-pip-version-check psutil pillow numpy
exec "$py" "$root/bench/hostile.py" --bin "$bin" --work "$root/bench/out/hostile" "$@"
