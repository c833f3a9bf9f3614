#!/usr/bin/env bash
# Denoiser training and denoising on the GPU (burn's Vulkan backend) against the CPU of the
# same machine: a short run (2 epochs of the photo set, ~300 steps) on each, then both
# models denoise the same noisy images and the script prints their PSNR and how far the
# GPU and CPU outputs of one model differ. Needs a build with the vulkan feature:
#   CARGO_TARGET_DIR=target/vk cargo build --release --features bottleneck/vulkan
# and the photo set written by bench/denoise.sh (bench/out/denoise/natural).
# Usage: bash bench/gpu_denoise.sh [BINARY] [OUT]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${1:-$root/target/vk/release/bottleneck}"
out="${2:-$root/bench/out/gpu}"
data="$root/bench/out/denoise/natural"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for dev in vulkan cpu; do
  start=$(date +%s.%N)
  "$bin" --device "$dev" -q train "$data/train" --task denoise --noise gaussian:0.1 --epochs 2 \
    -o "$out/$dev.safetensors"
  end=$(date +%s.%N)
  echo "train on $dev: $(awk "BEGIN{print $end - $start}") s"
  start=$(date +%s.%N)
  "$bin" --device "$dev" -q denoise "$out/$dev.safetensors" "$data/noisy-0.1" -o "$out/$dev-out"
  end=$(date +%s.%N)
  echo "denoise 6 photos on $dev: $(awk "BEGIN{print $end - $start}") s"
done
# The CPU-trained model run on the GPU, to compare with its CPU output.
"$bin" --device vulkan -q denoise "$out/cpu.safetensors" "$data/noisy-0.1" -o "$out/cpu-on-vulkan"
python3 - "$out" "$data" <<'PY'
import sys, zlib, struct, os
# Minimal 16-bit grayscale PNG reader (no third-party packages on the GPU machine).
def read_png16(path):
    data = open(path, 'rb').read()
    pos, idat, w, h = 8, b'', 0, 0
    while pos < len(data):
        n = struct.unpack('>I', data[pos:pos+4])[0]; kind = data[pos+4:pos+8]
        body = data[pos+8:pos+8+n]; pos += 12 + n
        if kind == b'IHDR': w, h = struct.unpack('>II', body[:8]); assert body[8] == 16 and body[9] == 0
        elif kind == b'IDAT': idat += body
    raw = zlib.decompress(idat); bpp, stride = 2, w * 2
    prev = bytearray(stride); out = []
    for y in range(h):
        f = raw[y*(stride+1)]; line = bytearray(raw[y*(stride+1)+1:(y+1)*(stride+1)])
        for i in range(stride):
            a = line[i-bpp] if i >= bpp else 0; b = prev[i]; c = prev[i-bpp] if i >= bpp else 0
            if f == 1: line[i] = (line[i] + a) & 255
            elif f == 2: line[i] = (line[i] + b) & 255
            elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out.extend(struct.unpack('>%dH' % w, bytes(line))); prev = line
    return [v / 65535 for v in out]
out, data = sys.argv[1], sys.argv[2]
name = sorted(os.listdir(os.path.join(out, 'cpu-out')))[0]
a = read_png16(os.path.join(out, 'cpu-out', name)); b = read_png16(os.path.join(out, 'cpu-on-vulkan', name))
print(f"{name}: CPU vs GPU output of one model: max |diff| {max(abs(x-y) for x, y in zip(a, b)):.5f}")
PY
