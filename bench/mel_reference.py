"""Reference values from librosa for the known-answer tests of data/spectral.rs.

Prints the librosa version, entries of its default mel filterbank (sr 16000, n_fft 1024,
128 mels, Slaney) and the DCASE-style log-mel (10 log10(power + eps), hop 512) of a signal
that the Rust test builds the same way: 0.5 sin(2 pi 440 t) + 0.25 sin(2 pi 3000 t) plus a
linear chirp 100 Hz -> 6 kHz at 0.1, one second at 16 kHz.

Usage: python3 -m venv /tmp/lv && /tmp/lv/bin/pip install librosa && /tmp/lv/bin/python bench/mel_reference.py
"""
import sys

import librosa
import numpy as np

sr, n_fft, hop, n_mels = 16000, 1024, 512, 128
fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
print("librosa", librosa.__version__, file=sys.stderr)
for m in [0, 10, 40, 64, 100, 127]:
    k = int(np.argmax(fb[m]))
    print(f"filter[{m}][{k}] = {fb[m, k]:.9e} (peak of row {m})")
print(f"filter row sums 0, 64, 127 = {fb[0].sum():.9e} {fb[64].sum():.9e} {fb[127].sum():.9e}")

t = np.arange(sr, dtype=np.float64) / sr
y = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.25 * np.sin(2 * np.pi * 3000 * t)
phase = 2 * np.pi * (100 * t + (6000 - 100) / 2 * t * t)
y = (y + 0.1 * np.sin(phase)).astype(np.float32)
mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels,
                                     power=2.0)
logmel = 10 * np.log10(mel + np.finfo(np.float32).eps)
print("frames", logmel.shape[1])
for f, m in [(0, 5), (5, 14), (10, 60), (15, 90), (16, 127), (31, 20)]:
    print(f"logmel[frame {f}][band {m}] = {logmel[m, f]:.6f}")
