#!/usr/bin/env bash
# The Vulkan build on a machine whose only Vulkan device is Mesa's software one (llvmpipe),
# as on many machines without a GPU that have Mesa installed. burn's shaders crash llvmpipe's
# shader compiler (a segmentation fault in pipeline creation, Mesa 22.3 and 25.0), so:
#   - `--device auto` must pass it over for the CPU backend, say so, and train;
#   - `--device vulkan` must refuse it with a message and exit status 1, not crash.
# Usage: bash bench/vulkan_software.sh   (installs mesa-vulkan-drivers when missing; builds
# target/vk, ~15-25 min the first time on 2 cores)
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/bench/out/vulkan_software"
if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! ldconfig -p | grep -q libvulkan.so.1; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
fi
CARGO_TARGET_DIR="$root/target/vk" cargo build --release --manifest-path "$root/Cargo.toml" -q \
  -p bottleneck-cli --features bottleneck/vulkan || exit 1
bin="$root/target/vk/release/bottleneck"
# Only the software device, even on a machine with a GPU.
VK_DRIVER_FILES="$(ls /usr/share/vulkan/icd.d/lvp_icd*.json | head -n 1)"
export VK_DRIVER_FILES
# Mesa's window-system code warns on every start without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
rm -rf "$work"
mkdir -p "$work"
cd "$work" || exit 1
fail=0
check() { # NAME, then the command's exit status as 0 for a pass
  if [ "$2" -eq 0 ]; then echo "ok    $1"; else echo "FAIL  $1"; fail=1; fi
}
"$bin" --device cpu -q boards boards --train 64 --test-good 10 --per-defect 5 --seed 3

"$bin" --device auto train boards -o auto.safetensors --epochs 2 2>auto.log
status=$?
grep -m1 'device:' auto.log
check "--device auto trains (exit $status)" "$status"
grep -q 'device: cpu .*software, not a GPU' auto.log
check "--device auto names the software device and runs on the CPU" $?

"$bin" --device vulkan train boards -o vulkan.safetensors --epochs 2 2>vulkan.log
status=$?
tail -n 1 vulkan.log
[ "$status" -eq 1 ] && grep -q 'software one on the CPU' vulkan.log && [ ! -e vulkan.safetensors ]
check "--device vulkan refuses the software device (exit $status, no model written)" $?

[ "$fail" -eq 0 ] && echo "all checks passed" || { echo "some checks failed"; exit 1; }
