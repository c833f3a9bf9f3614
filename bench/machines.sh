#!/usr/bin/env bash
# Anomalous machine sounds on SYNTHETIC data (`bottleneck machines`: train/good, test/good,
# test/{bearing_clicks,imbalance,pitch_drift}): bottleneck against PCA reconstruction error
# and nearest-neighbour distance on the DCASE 2020 baseline's log-mel features, same files,
# same run. Prints AUROC and pAUC (max FPR 0.1) per fault and overall, and throughput.
# Runs once per fault severity in SEVERITIES (default "1 0.3 0.15": plain to subtle).
# EPOCHS=N passes --epochs N to bottleneck train.
# Usage: bash bench/machines.sh [--seed 7] [--pca 8,64] [--nn-max 20000] [--train-args="..."]
#        [--baseline-only]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -p bottleneck-cli -q
cp "$root/target/release/bottleneck" "${TMPDIR:-/tmp}/bottleneck-bench-machines"
for severity in ${SEVERITIES:-1 0.3 0.15}; do
  "$py" "$root/bench/machines.py" --bin "${TMPDIR:-/tmp}/bottleneck-bench-machines" \
    --work "$root/bench/out/machines/severity-$severity" --severity "$severity" "$@"
done
