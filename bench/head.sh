#!/usr/bin/env bash
# The discriminative head (issue 16, part 1) against the reconstruction error alone, same
# data, same seed, same run: the demo's boards (`bottleneck boards`, seed 42: 400 good 64x64
# RGB boards, 60 good and 6 x 20 defective test boards with masks) trained with the demo's
# settings, with `--head none` and `--head segment` (add `--knn 0` and other flags through
# TRAIN_ARGS). Prints wall time, image AUROC (the score, the map alone, and with a head each
# part alone), pixel AUROC, AUPRO and per-defect image AUROC.
# Usage: bash bench/head.sh [SEED ...] (default 42); TRAIN_ARGS="..." for extra train flags;
# HEADS="segment" to run only the head (default: none segment).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/bottleneck"
work="$root/bench/out/head"
mkdir -p "$work"
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(42)
for seed in "${seeds[@]}"; do
  data="$work/boards-$seed"
  [ -d "$data/train/good" ] || "$bin" -q boards "$data" --seed "$seed"
  for head in ${HEADS:-none segment}; do
    model="$work/$head-$seed.safetensors"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$bin" -q train "$data" -o "$model" --width 16 --batch-size 16 --epochs 80 --lr 2e-3 \
      --fpr 0.02 --calibration 0.2 --seed "$seed" --head "$head" ${TRAIN_ARGS:-}
    end=$(date +%s.%N)
    "$bin" -q eval "$model" "$data" >"$work/$head-$seed.eval.json"
    python3 - "$seed" "$head" "$(awk "BEGIN{print $end - $start}")" "$work/$head-$seed.eval.json" <<'PY'
import json, sys
seed, head, secs, path = sys.argv[1:]
e = json.load(open(path))
f = lambda v: "  -   " if v is None else f"{v:.4f}"
knn = e.get("knn_parts") or {}
parts = e.get("head_parts") or {}
per = " ".join(f"{c['category']} {f(c['image_auroc'])}" for c in e["per_category"][1:])
print(f"seed {seed} head {head:<8} train {float(secs):6.1f}s  image {f(e['image_auroc'])} "
      f"(map {f(knn.get('map_only'))}, error part {f(parts.get('error_only'))}, "
      f"head part {f(parts.get('head_only'))})  pixel {f(e['pixel_auroc'])}  "
      f"aupro {f(e['aupro'])}  F1 {e['f1']:.3f}  false alarms {f(e['false_alarm_rate_good'])}")
print(f"    per defect: {per}")
PY
  done
done
