#!/usr/bin/env bash
# The Python package: its overhead over the same call in one Rust process, PyOD's
# AutoEncoder on the table cases of bench/tables.sh, and scoring a CSV larger than a Dask
# worker's memory against one `bottleneck score` process (see bench/python_bench.py).
# Usage: bash bench/python.sh [--benches overhead,pyod,dask] [--datasets wine,digits,fmnist]
# [--gb 2]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
py="$(BENCH_TORCH=1 bash "$root/bench/setup_venv.sh" | tail -n 1)"
venv="$(dirname "$(dirname "$py")")"
"$venv/bin/pip" install -q --disable-pip-version-check "maturin>=1.9.4,<2" pyod tqdm \
  "dask[dataframe,distributed]" psutil pandas pyarrow
cargo build --release --manifest-path "$root/Cargo.toml" -q --workspace --examples --bins
PATH="$venv/bin:$PATH" "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation "$root/crates/bottleneck-py"
cd "$root"
exec "$py" bench/python_bench.py --bin target/release/bottleneck \
  --example target/release/examples/score_in_memory "$@"
