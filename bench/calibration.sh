#!/usr/bin/env bash
# Realised false-alarm rates with 100, 300 and 1,000 normal samples over 20 seeds: bottleneck's
# single split (--folds 1), cross-conformal ensemble (the default) and PyOD's contamination rule
# (see bench/calibration.py).
# Usage: bash bench/calibration.sh [--cases fmnist,digits --classes 0 --sizes 100,300,1000 --seeds 20]
#   images: --cases fmnist_img,digits_img (the same samples as 28x28 and 8x8 PNGs)
#   --fresh pool draws the fresh normals from the training split; --train-args="..." adds flags
#   --then COMMIT adds method "then": that commit's default, built in a git worktree under
#   bench/out (--then 3a2a562 is the single split as it was when issue 17 was filed)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --then)
      [ $# -ge 2 ] || { echo "calibration.sh: --then needs a commit" >&2; exit 2; }
      commit="$(git -C "$root" rev-parse --short "$2^{commit}")"
      dir="$root/bench/out/then-$commit"
      if [ ! -f "$dir/src/Cargo.toml" ]; then
        rm -rf "$dir/src"
        git -C "$root" worktree prune
        git -C "$root" worktree add --detach -f "$dir/src" "$commit" >&2
      fi
      cargo build --release -q --manifest-path "$dir/src/Cargo.toml" --target-dir "$dir/target" \
        --bin bottleneck
      args+=(--then-bin "$dir/target/release/bottleneck")
      shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
fi
py="$(BENCH_TORCH=1 bash "$root/bench/setup_venv.sh" | tail -n 1)"
"$(dirname "$py")/pip" install -q --disable-pip-version-check pyod tqdm
cargo build --release --manifest-path "$root/Cargo.toml" -q --bins
cd "$root/bench"
exec "$py" calibration.py --bin "$root/target/release/bottleneck" "${args[@]}"
