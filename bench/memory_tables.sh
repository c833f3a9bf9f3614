#!/usr/bin/env bash
# Scoring a ~1 GB CSV: bottleneck streams it in chunks; the peer figure is what loading it
# whole takes (pandas.read_csv, the first step of a PyOD or scikit-learn workflow), measured
# in the same run. Prints peak RSS (MB) and wall time of each.
# Usage: bash bench/memory_tables.sh [ROWS]   (default 5,000,000 rows x 24 columns ~ 1 GB)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
rows="${1:-5000000}"
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
"$(dirname "$py")/pip" install -q --disable-pip-version-check pandas
cargo build --release --manifest-path "$root/Cargo.toml" -q
bin="$root/target/release/bottleneck"
work="$root/bench/out/memory_tables"
mkdir -p "$work"
big="$work/big_$rows.csv"
if [ ! -f "$big" ]; then
  "$py" - "$big.tmp" "$rows" <<'PY'
import sys, numpy as np
path, rows = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
mix = rng.normal(size=(6, 24))
with open(path, "w") as f:
    f.write("id," + ",".join(f"s{j}" for j in range(24)) + "\n")
    for start in range(0, rows, 200000):
        n = min(200000, rows - start)
        x = rng.normal(size=(n, 6)) @ mix + 0.1 * rng.normal(size=(n, 24))
        ids = np.arange(start, start + n).reshape(-1, 1)
        np.savetxt(f, np.hstack([ids, x]), fmt=["%d"] + ["%.5f"] * 24, delimiter=",")
PY
  mv "$big.tmp" "$big"
fi
head -n 20001 "$big" > "$work/train.csv"
"$bin" --quiet train "$work/train.csv" -o "$work/model.safetensors" --id-column id
size=$(du -m "$big" | cut -f1)
[ -x /usr/bin/time ] || apt-get install -y -qq time
measure() { /usr/bin/time -f "%M %e" "$@" 2>&1 >/dev/null | tail -n 1; }
read -r ours_kb ours_s < <(measure "$bin" --quiet score "$work/model.safetensors" "$big" -o "$work/scores.csv")
read -r peer_kb peer_s < <(measure "$py" -c "import pandas, sys; df = pandas.read_csv(sys.argv[1]); print(df.shape)" "$big")
echo "| CSV | rows | bottleneck score: peak RSS | wall | pandas.read_csv alone: peak RSS | wall |"
echo "|---|---|---|---|---|---|"
echo "| ${size} MB | $rows | $((ours_kb / 1024)) MB | ${ours_s} s | $((peer_kb / 1024)) MB | ${peer_s} s |"
