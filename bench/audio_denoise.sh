#!/usr/bin/env bash
# Speech denoising: bottleneck against spectral subtraction (numpy/scipy) and the noisy
# input on the same files: espeak-ng sentences (40 train, 12 test with held-out voices) and
# the recorded ALSA samples (test only), mixed with white, pink and babble noise at 0, 5 and
# 10 dB SNR. Prints SNR improvement, segmental SNR improvement and log-spectral distance.
# EPOCHS=N passes --epochs N to bottleneck train.
# Usage: bash bench/audio_denoise.sh [--noises white,pink,babble] [--snrs 0,5,10]
#        [--seed 1] [--train-args="..."] [--baseline-only]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if ! command -v espeak-ng >/dev/null || [ ! -d /usr/share/sounds/alsa ]; then
  apt-get update -qq && apt-get install -y -qq espeak-ng alsa-utils
fi
py="$(bash "$root/bench/setup_venv.sh" | tail -n 1)"
bin=()
if [[ " $* " != *" --baseline-only "* ]]; then
  cargo build --release --manifest-path "$root/Cargo.toml" -p bottleneck-cli -q
  cp "$root/target/release/bottleneck" "${TMPDIR:-/tmp}/bottleneck-bench-audio-denoise"
  bin=(--bin "${TMPDIR:-/tmp}/bottleneck-bench-audio-denoise")
fi
exec "$py" "$root/bench/audio_denoise.py" "${bin[@]}" --work "$root/bench/out/audio_denoise" "$@"
