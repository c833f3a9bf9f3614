#!/usr/bin/env bash
# Default training on a textured inspection set built from scikit-image's texture photographs
# (bench/textures.py: 350 good 300x300 grayscale crops per texture; scratches, stains,
# missing patches and small spots as defects, with masks). For each texture: wall time of
# `bottleneck train` with every default, then `eval` (image and pixel AUROC), beside PCA
# reconstruction and pixel 1-NN on the same split from the same run.
# Usage: bash bench/textures.sh [TEXTURE ...] (default: brick grass gravel); extra train
# arguments in TRAIN_ARGS (e.g. TRAIN_ARGS="--epochs 200" for a fixed-length run).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/bottleneck"
work="$root/bench/out/textures"
mkdir -p "$work"
textures=("$@")
[ ${#textures[@]} -gt 0 ] || textures=(brick grass gravel)
printf '%-8s %8s %7s %7s %7s %7s %7s %7s\n' texture train_s epochs image pixel pca16 pca90 nn1
for t in "${textures[@]}"; do
  data="$work/$t"
  [ -d "$data/train/good" ] || "$py" "$root/bench/textures.py" make "$data" --texture "$t" >/dev/null
  model="$work/$t.safetensors"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  "$bin" -q train "$data" -o "$model" ${TRAIN_ARGS:-}
  end=$(date +%s.%N)
  "$bin" -q eval "$model" "$data" >"$work/$t.eval.json"
  "$py" "$root/bench/textures.py" baselines "$data" >"$work/$t.baselines.json" 2>/dev/null
  "$py" - "$t" "$(awk "BEGIN{print $end - $start}")" "$work/$t.eval.json" "$work/$t.baselines.json" "$model" <<'PY'
import json, struct, sys
t, secs, ev, base, model = sys.argv[1:]
e, b = json.load(open(ev)), json.load(open(base))
raw = open(model, "rb").read()
header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
meta = next(json.loads(v) for v in header["__metadata__"].values() if v.startswith("{"))
print(f"{t:<8} {float(secs):8.1f} {meta['training']['epochs']:7d} {e['image_auroc']:7.4f} "
      f"{e['pixel_auroc']:7.4f} {b['pca16']:7.4f} {b['pca90']:7.4f} {b['nn1']:7.4f}")
PY
done
