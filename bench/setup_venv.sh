#!/usr/bin/env bash
# Creates bench/.venv with the Python peers used by the benchmarks (scikit-learn, numpy, scipy,
# Pillow, librosa; PyTorch when BENCH_TORCH=1, run on CPU only). Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check numpy scipy scikit-learn pillow scikit-image pooch librosa
if [ "${BENCH_TORCH:-0}" = "1" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check torch
fi
echo "$venv/bin/python"
