#!/usr/bin/env bash
# Memory: train on 20,000 grayscale 256x256 images (inputs 128x128, too many to cache, so
# batches stream from disk) and report peak RSS; then score 100,000 images (the 20,000 five
# times over, through symlinks) sampling RSS as it goes, to show it does not grow.
# The network is narrow (--width 8) and trained for one epoch: memory, not accuracy, is
# measured here. Usage: bash bench/memory.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/bottleneck"
work="$root/bench/out/memory"
mkdir -p "$work"
if [ ! -f "$work/images/.complete" ]; then
  "$py" - "$work/images" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out = sys.argv[1]
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (64, 64)).astype(np.uint8)
for d in range(20):
    os.makedirs(f"{out}/{d:02d}", exist_ok=True)
for i in range(20000):
    shift = rng.integers(0, 8, 2)
    img = np.roll(base, tuple(shift), (0, 1))
    img = np.kron(img, np.ones((4, 4), np.uint8))
    Image.fromarray(img, "L").save(f"{out}/{i % 20:02d}/{i:05d}.png", compress_level=1)
open(f"{out}/.complete", "w").close()
PY
fi
# --image-size 128: the whole-image path these figures have always measured (256 px images
# are read in tiles by default since issue 16's part 2).
/usr/bin/time -f "train: %e s, peak RSS %M KB" "$bin" train "$work/images" -o "$work/model.safetensors" \
  --epochs 1 --width 8 --image-size 128 --quiet
if [ ! -d "$work/many" ]; then
  for k in 0 1 2 3 4; do
    mkdir -p "$work/many/$k"
    for d in "$work"/images/*/; do ln -s "$d" "$work/many/$k/$(basename "$d")"; done
  done
fi
"$bin" score "$work/model.safetensors" "$work/many" -o "$work/scores.csv" --quiet &
pid=$!
echo "score: RSS samples (KB) every 10 s:"
while kill -0 "$pid" 2>/dev/null; do
  grep VmRSS "/proc/$pid/status" 2>/dev/null | awk '{printf "%s ", $2}'
  sleep 10
done
wait "$pid"
echo
echo "scored $(($(wc -l < "$work/scores.csv") - 1)) images"
