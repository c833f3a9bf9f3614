#!/usr/bin/env bash
# Native-resolution tiles (issue 16, part 2) against the whole image shrunk to one input, on
# high-resolution boards with small defects, same data, same seed, same run:
# `bottleneck boards --size 1024 --defect-px 3-8` (60 good 1,024 px RGB boards to train on,
# 20 good and 6 x 5 defective test boards with masks; each defect's largest extent drawn
# in 3-8 px) trained with `--image-size 128` (the whole image shrunk to a 128 px input, the
# default before tiles) and with `--tile 64` (64 px tiles at native resolution, the default
# for images over 128 px), otherwise defaults. Prints wall time of
# train and eval, image AUROC, pixel AUROC (thinned good pixels for the tiled maps), AUPRO
# at the masks' 1,024 px, and per-defect image AUROC.
# Usage: bash bench/hires.sh [SEED ...] (default 3); VARIANTS="whole tile64 tile128" to
# choose which run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/bottleneck"
work="$root/bench/out/hires"
mkdir -p "$work"
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(3)
for seed in "${seeds[@]}"; do
  data="$work/boards-$seed"
  [ -d "$data/train/good" ] || "$bin" -q boards "$data" --size 1024 --train 60 \
    --test-good 20 --per-defect 5 --defect-px 3-8 --seed "$seed"
  for variant in ${VARIANTS:-whole tile64}; do
    case "$variant" in
      whole) flags=(--image-size 128) ;;
      tile*) flags=(--tile "${variant#tile}") ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    model="$work/$variant-$seed.safetensors"
    start=$(date +%s.%N)
    "$bin" -q train "$data" -o "$model" --seed "$seed" "${flags[@]}"
    mid=$(date +%s.%N)
    "$bin" -q eval "$model" "$data" >"$work/$variant-$seed.eval.json"
    end=$(date +%s.%N)
    python3 - "$seed" "$variant" "$(awk "BEGIN{print $mid - $start}")" \
      "$(awk "BEGIN{print $end - $mid}")" "$work/$variant-$seed.eval.json" <<'PY'
import json, sys
seed, variant, train, ev, path = sys.argv[1:]
e = json.load(open(path))
f = lambda v: "  -   " if v is None else f"{v:.4f}"
per = " ".join(f"{c['category']} {f(c['image_auroc'])}" for c in e["per_category"][1:])
print(f"seed {seed} {variant:<8} train {float(train):6.1f}s eval {float(ev):6.1f}s  "
      f"image {f(e['image_auroc'])}  pixel {f(e['pixel_auroc'])} (at {e['pixel_resolution']} px)  "
      f"aupro {f(e['aupro'])}  F1 {e['f1']:.3f}  false alarms {f(e['false_alarm_rate_good'])}")
print(f"    per defect: {per}")
PY
  done
done
