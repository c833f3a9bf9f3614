"""Speech denoising: bottleneck against spectral subtraction (numpy/scipy) and the noisy
input, on the same noisy files, for white, pink and babble noise at 0, 5 and 10 dB SNR.
Called by audio_denoise.sh, which installs what this needs.

Data (all 16 kHz mono 16-bit WAV, generated here; every random draw is seeded from --seed):
  train   40 Harvard sentences (lists 1-4), synthesised by espeak-ng with 8 voices
          (TRAIN_VOICES), speed 130-190 wpm and pitch 25-75 drawn per sentence, resampled
          22050 -> 16000 Hz (scipy.signal.resample_poly 320/441), leading and trailing
          silence trimmed to 0.15 s, peak 0.8.
  test    12 other Harvard sentences (list 5 and the first two of list 6), espeak-ng with
          TEST_VOICES (three of the five never used in training), prepared the same way;
          plus the recorded speech of /usr/share/sounds/alsa/*.wav except Noise.wav
          (48 -> 16 kHz), which are test files only and reported on their own as well.
  noise   white (Gaussian), pink (1/f power: white noise shaped in the FFT domain) and
          babble (4-6 espeak-ng streams, one voice per stream, each at unit RMS, summed).
          Training noise: three 10 s files of each kind in NOISE_DIR, their own seeds;
          training babble uses list 7 sentences and BABBLE_TRAIN_VOICES. Test babble: one
          60 s track of list 8 sentences with BABBLE_TEST_VOICES (no voice or sentence of
          the clean test set or of training), a seeded segment per file.
  mixing  each test file with each noise at each SNR: noise scaled so that
          10 log10(sum clean^2 / sum noise^2) is exactly the SNR over the file, the same
          noise segment for the three SNRs; the mixture is then peak-normalised to 0.9 and
          the same gain applied to the clean reference (so nothing clips). Metrics use the
          16-bit noisy file as written, against the float reference.

Ours: bottleneck train CLEAN_TRAIN --task denoise --noise mix:NOISE_DIR --seed 7
      [--epochs $EPOCHS], then bottleneck denoise on the folder of all noisy files.
Spectral subtraction: STFT (n_fft 512, hop 128, periodic Hann); noise power per bin = the
  mean power of the 10% of frames with the lowest total energy in the noisy file itself
  (a quietest-frames estimate, no VAD); power subtraction |Y|^2 - 2 N with a spectral floor
  of 0.02 |Y|^2; noisy phase; inverse STFT (overlap-add), cut to the input length.
Metrics, per file against the clean reference:
  SNR     10 log10(sum r^2 / sum (r - e)^2); improvement = output SNR - input SNR.
  segSNR  the same per 512-sample frame (hop 256), clipped to [-10, 35] dB, averaged over
          the frames whose reference energy is within 40 dB of the file's loudest frame.
  LSD     power spectra (scipy.signal.stft, n_fft 512, hop 128, Hann, full frames only,
          'spectrum' scaling, floor 1e-10 ~ -100 dB re a full-scale sine): per frame
          sqrt(mean over bins of (10 log10 (P_ref + floor) / (P_est + floor))^2), averaged
          over frames.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
from scipy.io import wavfile
from scipy.signal import istft, resample_poly, stft

SR = 16000
N_FFT, HOP = 512, 128
LSD_FLOOR = 1e-10

HARVARD = [
    # list 1
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "A large size in stockings is hard to sell.",
    # list 2
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    # list 3
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    # list 4
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.", "What joy there is in living.",
    # list 5
    "A king ruled the state in the early days.", "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.", "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.", "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.", "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.", "Mesh wire keeps chicks inside.",
    # list 6 (first two)
    "The frosty air passed through the coat.", "The crooked maze failed to fool the mouse.",
]
TRAIN_SENTENCES = HARVARD[:40]
TEST_SENTENCES = HARVARD[40:52]
BABBLE_TRAIN_SENTENCES = [  # list 7
    "We talked of the side show in the circus.", "Use a pencil to write the first draft.",
    "He ran half way to the hardware store.", "The clock struck to mark the third period.",
    "A small creek cut across the field.", "Cars and busses stalled in snow drifts.",
    "The set of china hit the floor with a crash.", "This is a grand season for hikes on the road.",
    "The dune rose from the edge of the water.", "Those words were the cue for the actor to leave.",
]
BABBLE_TEST_SENTENCES = [  # list 8
    "A yacht slid around the point into the bay.", "The two met while playing on the sand.",
    "The ink stain dried on the finished page.", "The walled town was seized without a fight.",
    "The lease ran out in sixteen weeks.", "A tame squirrel makes a nice pet.",
    "The horn of the car woke the sleeping cop.", "The heart beat strongly and with firm strokes.",
    "The pearl was worn in a thin silver ring.", "The fruit peel was cut in thick slices.",
]
TRAIN_VOICES = ["en", "en-us", "en+f3", "en+m3", "de", "fr-fr", "en-gb-scotland", "en-us+f2"]
TEST_VOICES = ["en-us", "en+f3", "en-gb-x-rp+f4", "en-029+m5", "es"]
BABBLE_TRAIN_VOICES = ["en", "en+m3", "de", "fr-fr", "en-gb-scotland", "en-us+f2"]
BABBLE_TEST_VOICES = ["en+m1", "en-us-nyc", "nl", "it", "en+f1", "en-gb-x-gbclan"]
ALSA = "/usr/share/sounds/alsa"
NOISES = ["white", "pink", "babble"]


# ----------------------------------------------------------------------------- audio I/O

def read_wav(path):
    rate, x = wavfile.read(path)
    if x.dtype == np.int16:
        x = x.astype(np.float64) / 32768.0
    elif x.dtype == np.int32:
        x = x.astype(np.float64) / 2147483648.0
    elif x.dtype == np.uint8:
        x = (x.astype(np.float64) - 128.0) / 128.0
    else:
        x = x.astype(np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    return rate, x


def write_wav(path, x):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    wavfile.write(path, SR, np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16))


def quantised(x):
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768) / 32768


def to_16k(rate, x):
    if rate == SR:
        return x
    g = np.gcd(rate, SR)
    return resample_poly(x, SR // g, rate // g)


def trim(x, pad=0.15, below_db=-50.0):
    """Cuts leading and trailing samples quieter than below_db re the peak, keeping pad s."""
    loud = np.flatnonzero(np.abs(x) > np.abs(x).max() * 10 ** (below_db / 20))
    p = int(pad * SR)
    return x[max(loud[0] - p, 0):min(loud[-1] + 1 + p, len(x))]


_espeak_cache = {}


def espeak(text, voice, speed, pitch, tmp):
    key = (text, voice, speed, pitch)
    if key not in _espeak_cache:
        out = os.path.join(tmp, "espeak.wav")
        subprocess.run(["espeak-ng", "-w", out, "-v", voice, "-s", str(speed), "-p", str(pitch),
                        text], check=True, capture_output=True)
        _espeak_cache[key] = to_16k(*read_wav(out))
    return _espeak_cache[key]


def rng_for(seed, *tags):
    return np.random.default_rng([seed] + [abs(hash_tag(t)) for t in tags])


def hash_tag(t):
    """A stable integer for a tag (Python's hash() of str is salted per process)."""
    if isinstance(t, int):
        return t
    h = 2166136261
    for b in str(t).encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


# ----------------------------------------------------------------------------- noise

def white(n, rng):
    return rng.standard_normal(n)


def pink(n, rng):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    return x / np.sqrt(np.mean(x ** 2))


def babble(n, rng, sentences, voices, tmp):
    """4-6 streams, each one voice reading the sentences in a random order (looped), started
    at a random offset; each stream at unit RMS; the sum at unit RMS."""
    streams = int(rng.integers(4, 7))
    chosen = rng.choice(len(voices), size=streams, replace=False)
    total = np.zeros(n)
    for v in chosen:
        speed, pitch = int(rng.integers(130, 191)), int(rng.integers(25, 76))
        offset = int(rng.integers(0, 2 * SR))
        parts, length = [], 0
        while length < n + offset:
            for i in rng.permutation(len(sentences)):
                u = trim(espeak(sentences[i], voices[v], speed, pitch, tmp), pad=0.05)
                parts.append(u)
                length += len(u)
                if length >= n + offset:
                    break
        s = np.concatenate(parts)[offset:offset + n]
        total += s / np.sqrt(np.mean(s ** 2))
    return total / np.sqrt(np.mean(total ** 2))


def mix(clean, noise, snr_db):
    """Noise scaled to give exactly snr_db over the file; the mixture peak-normalised to 0.9
    and the same gain applied to the reference. Returns (noisy, reference)."""
    g = np.sqrt(np.sum(clean ** 2) / (np.sum(noise ** 2) * 10 ** (snr_db / 10)))
    noisy = clean + g * noise
    gain = 0.9 / np.abs(noisy).max()
    return gain * noisy, gain * clean


# ----------------------------------------------------------------------------- data

def prepare(work, seed, snrs, noises, tmp):
    """Writes train/clean, train/noise, test/noisy; returns the test items."""
    data = os.path.join(work, "data")
    if os.path.exists(data):
        shutil.rmtree(data)
    clean_dir = os.path.join(data, "train_clean")
    noise_dir = os.path.join(data, "train_noise")
    noisy_dir = os.path.join(data, "test_noisy")
    train_seconds = 0.0
    for i, text in enumerate(TRAIN_SENTENCES):
        r = rng_for(seed, "train", i)
        voice = TRAIN_VOICES[i % len(TRAIN_VOICES)]
        x = trim(espeak(text, voice, int(r.integers(130, 191)), int(r.integers(25, 76)), tmp))
        x = 0.8 * x / np.abs(x).max()
        write_wav(os.path.join(clean_dir, f"s{i:02d}_{voice.replace('+', '_')}.wav"), x)
        train_seconds += len(x) / SR
    for kind in NOISES:
        for k in range(3):
            r = rng_for(seed, "train-noise", kind, k)
            n = 10 * SR
            if kind == "white":
                x = white(n, r)
            elif kind == "pink":
                x = pink(n, r)
            else:
                x = babble(n, r, BABBLE_TRAIN_SENTENCES, BABBLE_TRAIN_VOICES, tmp)
            write_wav(os.path.join(noise_dir, f"{kind}_{k}.wav"), 0.1 * x)

    clean = []
    for i, text in enumerate(TEST_SENTENCES):
        r = rng_for(seed, "test", i)
        voice = TEST_VOICES[i % len(TEST_VOICES)]
        x = trim(espeak(text, voice, int(r.integers(130, 191)), int(r.integers(25, 76)), tmp))
        clean.append({"name": f"t{i:02d}_{voice.replace('+', '_')}", "set": "espeak",
                      "voice": voice, "held_out_voice": voice not in TRAIN_VOICES,
                      "text": text, "x": 0.8 * x / np.abs(x).max()})
    for path in sorted(glob.glob(os.path.join(ALSA, "*.wav"))):
        base = os.path.splitext(os.path.basename(path))[0]
        if base == "Noise":
            continue
        x = to_16k(*read_wav(path))
        clean.append({"name": f"alsa_{base}", "set": "alsa", "voice": "recorded",
                      "held_out_voice": True, "text": base.replace("_", " "),
                      "x": 0.8 * x / np.abs(x).max()})

    longest = max(len(c["x"]) for c in clean)
    test_babble = babble(60 * SR, rng_for(seed, "test-babble"), BABBLE_TEST_SENTENCES,
                         BABBLE_TEST_VOICES, tmp) if "babble" in noises else None
    items = []
    for ci, c in enumerate(clean):
        n = len(c["x"])
        for kind in noises:
            r = rng_for(seed, "test-noise", kind, ci)
            if kind == "white":
                noise = white(n, r)
            elif kind == "pink":
                noise = pink(max(n, longest), r)[:n]
            else:
                start = int(r.integers(0, len(test_babble) - n))
                noise = test_babble[start:start + n]
            for snr in snrs:
                noisy, ref = mix(c["x"], noise, snr)
                rel = os.path.join(kind, f"{snr:g}dB", c["name"] + ".wav")
                write_wav(os.path.join(noisy_dir, rel), noisy)
                items.append({"rel": rel, "name": c["name"], "set": c["set"],
                              "voice": c["voice"], "held_out_voice": c["held_out_voice"],
                              "noise": kind, "snr": snr, "ref": ref, "noisy": quantised(noisy)})
    return clean_dir, noise_dir, noisy_dir, train_seconds, len(clean), items


# ----------------------------------------------------------------------------- methods

def spectral_subtraction(y, alpha=2.0, beta=0.02, quiet_share=0.1):
    win = "hann"
    _, _, Y = stft(y, fs=SR, window=win, nperseg=N_FFT, noverlap=N_FFT - HOP)
    P = np.abs(Y) ** 2
    energy = P.sum(axis=0)
    k = max(1, int(np.ceil(quiet_share * P.shape[1])))
    quiet = np.argsort(energy, kind="stable")[:k]
    noise = P[:, quiet].mean(axis=1, keepdims=True)
    S = np.maximum(P - alpha * noise, beta * P)
    X = np.sqrt(S) * np.exp(1j * np.angle(Y))
    _, x = istft(X, fs=SR, window=win, nperseg=N_FFT, noverlap=N_FFT - HOP)
    x = x[:len(y)]
    if len(x) < len(y):
        x = np.pad(x, (0, len(y) - len(x)))
    return x


# ----------------------------------------------------------------------------- metrics

def snr(ref, est):
    err = np.sum((ref - est) ** 2)
    with np.errstate(divide="ignore"):
        return float(10 * np.log10(np.sum(ref ** 2) / err)) if err > 0 else float("inf")


def seg_snr(ref, est, frame=512, hop=256, lo=-10.0, hi=35.0, active_db=40.0):
    n = 1 + max(0, (len(ref) - frame) // hop)
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    r, e = ref[idx], (ref - est)[idx]
    er = np.sum(r ** 2, axis=1)
    ee = np.sum(e ** 2, axis=1)
    active = er > er.max() * 10 ** (-active_db / 10)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 10 * np.log10(er / np.maximum(ee, 1e-300))
    return float(np.mean(np.clip(s[active], lo, hi)))


def power_spec(x):
    _, _, X = stft(x, fs=SR, window="hann", nperseg=N_FFT, noverlap=N_FFT - HOP,
                   boundary=None, padded=False)
    return np.abs(X) ** 2


def lsd(ref, est):
    a = 10 * np.log10(power_spec(ref) + LSD_FLOOR)
    b = 10 * np.log10(power_spec(est) + LSD_FLOOR)
    return float(np.mean(np.sqrt(np.mean((a - b) ** 2, axis=0))))


def metrics(ref, est):
    return {"snr": snr(ref, est), "segsnr": seg_snr(ref, est), "lsd": lsd(ref, est)}


def sanity():
    """Known answers of the metric code; exits on failure."""
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    ref = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    noise = rng.standard_normal(len(ref))
    noisy, ref_s = mix(ref, noise, 5.0)
    checks = [
        ("output == clean: SNR inf", snr(ref_s, ref_s) == float("inf")),
        ("output == clean: segSNR 35 (clip)", abs(seg_snr(ref_s, ref_s) - 35) < 1e-9),
        ("output == clean: LSD 0", lsd(ref_s, ref_s) == 0.0),
        ("mix: SNR exactly 5 dB", abs(snr(ref_s, noisy) - 5.0) < 1e-9),
        ("mix: peak 0.9", abs(np.abs(noisy).max() - 0.9) < 1e-12),
        ("output == noisy: improvement 0", snr(ref_s, noisy) - snr(ref_s, noisy) == 0),
        ("output == 0.5 clean: SNR 6.02 dB", abs(snr(ref_s, 0.5 * ref_s) - 6.0206) < 1e-3),
        ("output == 0.5 broadband clean: LSD 6.02 dB",
         abs(lsd(0.1 * noise, 0.05 * noise) - 6.0206) < 0.01),
        ("LSD(noisy) > 0", lsd(ref_s, noisy) > 1.0),
    ]
    # spectral subtraction with nothing to subtract (alpha 0, beta 1) gives the input back
    back = spectral_subtraction(noisy, alpha=0.0, beta=1.0)
    checks.append(("STFT/ISTFT round trip (alpha 0)", np.max(np.abs(back - noisy)) < 1e-9))
    ss = spectral_subtraction(noisy)
    checks.append(("spectral subtraction keeps the length", len(ss) == len(noisy)))
    bad = [name for name, ok in checks if not ok]
    for name, ok in checks:
        print(f"  sanity: {name}: {'ok' if ok else 'FAILED'}", file=sys.stderr)
    if bad:
        sys.exit(f"metric sanity checks failed: {bad}")
    return [name for name, _ in checks]


# ----------------------------------------------------------------------------- report

def run(cmd):
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    lines = [line.split("\r")[-1].strip() for line in (r.stdout + "\n" + r.stderr).splitlines()]
    lines = [line for line in lines if line]
    notes = [line for line in lines if line.startswith("wrote")]
    return wall, (notes or lines or [""])[-1]


def mean(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(v)) if v else None


def fmt(v, digits=2):
    return "–" if v is None else f"{v:.{digits}f}"


def summarise(rows):
    s = {"files": len(rows), "input_snr": mean(rows, "noisy_snr")}
    for m in ["ss", "ours"]:
        s[f"{m}_snr_improvement"] = mean(rows, f"{m}_snri")
        s[f"{m}_segsnr_improvement"] = mean(rows, f"{m}_segsnri")
    for m in ["noisy", "ss", "ours"]:
        s[f"{m}_lsd"] = mean(rows, f"{m}_lsd")
        s[f"{m}_snr"] = mean(rows, f"{m}_snr")
        s[f"{m}_segsnr"] = mean(rows, f"{m}_segsnr")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="bottleneck binary (not needed with --baseline-only)")
    ap.add_argument("--work", default="bench/out/audio_denoise")
    ap.add_argument("--seed", type=int, default=1, help="seed of the data generation")
    ap.add_argument("--snrs", default="0,5,10")
    ap.add_argument("--noises", default="white,pink,babble")
    ap.add_argument("--baseline-only", action="store_true",
                    help="skip bottleneck: data, spectral subtraction and metrics only")
    ap.add_argument("--train-args", default="", help="extra arguments for bottleneck train")
    args = ap.parse_args()
    if not args.baseline_only and not args.bin:
        sys.exit("--bin is required unless --baseline-only")
    snrs = [float(s) for s in args.snrs.split(",")]
    noises = args.noises.split(",")
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    checks = sanity()

    espeak_version = subprocess.run(["espeak-ng", "--version"], capture_output=True,
                                    text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="audio_denoise_")
    t = time.time()
    clean_dir, noise_dir, noisy_dir, train_seconds, n_clean, items = prepare(
        work, args.seed, snrs, noises, tmp)
    shutil.rmtree(tmp)
    print(f"data: {len(items)} noisy test files, {train_seconds:.1f} s of clean training "
          f"audio ({time.time() - t:.1f} s)", file=sys.stderr)
    test_seconds = sum(len(it["noisy"]) for it in items) / SR

    t = time.time()
    ss_out = [spectral_subtraction(it["noisy"]) for it in items]
    ss_wall = time.time() - t

    ours_out, ours = None, {}
    if not args.baseline_only:
        model = os.path.join(work, "speech.safetensors")
        cmd = [args.bin, "train", clean_dir, "--task", "denoise", "--noise",
               f"mix:{noise_dir}", "-o", model, "--seed", "7"]
        if os.environ.get("EPOCHS"):
            cmd += ["--epochs", os.environ["EPOCHS"]]
        cmd += args.train_args.split()
        train_wall, train_log = run(cmd)
        out_dir = os.path.join(work, "denoised")
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        denoise_wall, _ = run([args.bin, "denoise", model, noisy_dir, "-o", out_dir])
        ours_out, mismatched = [], []
        for it in items:
            path = os.path.join(out_dir, it["rel"])
            if not os.path.exists(path):
                sys.exit(f"bottleneck denoise wrote no {path}")
            rate, x = read_wav(path)
            if rate != SR or len(x) != len(it["noisy"]):
                mismatched.append(f"{it['rel']}: {rate} Hz, {len(x)} samples")
                x = np.pad(x, (0, max(0, len(it["noisy"]) - len(x))))[:len(it["noisy"])]
            ours_out.append(x)
        ours = {"train_wall_s": round(train_wall, 2), "train_command": " ".join(cmd),
                "train_log": train_log, "denoise_wall_s": round(denoise_wall, 2),
                "denoise_audio_s_per_s": round(test_seconds / denoise_wall, 1),
                "mismatched_outputs": mismatched}

    rows = []
    for i, it in enumerate(items):
        ref = it["ref"]
        row = {k: it[k] for k in ["rel", "name", "set", "voice", "held_out_voice", "noise",
                                  "snr"]}
        outs = {"noisy": it["noisy"], "ss": ss_out[i]}
        if ours_out is not None:
            outs["ours"] = ours_out[i]
        for m, est in outs.items():
            for k, v in metrics(ref, est).items():
                row[f"{m}_{k}"] = v
        for m in outs:
            if m != "noisy":
                row[f"{m}_snri"] = row[f"{m}_snr"] - row["noisy_snr"]
                row[f"{m}_segsnri"] = row[f"{m}_segsnr"] - row["noisy_segsnr"]
        rows.append(row)

    groups = []
    for kind in noises:
        for level in snrs:
            cond = [r for r in rows if r["noise"] == kind and r["snr"] == level]
            for subset in ["all", "espeak", "alsa"]:
                sel = cond if subset == "all" else [r for r in cond if r["set"] == subset]
                groups.append({"noise": kind, "snr": level, "set": subset, **summarise(sel)})
    for subset in ["all", "espeak", "alsa"]:
        sel = rows if subset == "all" else [r for r in rows if r["set"] == subset]
        groups.append({"noise": "all", "snr": "all", "set": subset, **summarise(sel)})
    held = [r for r in rows if r["set"] == "espeak" and r["held_out_voice"]]
    groups.append({"noise": "all", "snr": "all", "set": "espeak, held-out voices",
                   **summarise(held)})

    n_espeak = sum(1 for r in rows if r["set"] == "espeak") // max(1, len(noises) * len(snrs))
    n_alsa = n_clean - n_espeak
    result = {
        "data": {"seed": args.seed, "sample_rate": SR, "espeak_ng": espeak_version,
                 "train_files": len(TRAIN_SENTENCES), "train_audio_s": round(train_seconds, 2),
                 "train_voices": TRAIN_VOICES, "test_voices": TEST_VOICES,
                 "held_out_test_voices": [v for v in TEST_VOICES if v not in TRAIN_VOICES],
                 "test_clean_files": {"espeak": n_espeak, "alsa": n_alsa},
                 "noises": noises, "snrs_db": snrs, "test_noisy_files": len(items),
                 "test_audio_s": round(test_seconds, 2),
                 "train_clean_dir": clean_dir, "train_noise_dir": noise_dir,
                 "test_noisy_dir": noisy_dir},
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "scipy": scipy.__version__},
        "sanity_checks_passed": checks,
        "spectral_subtraction": {"n_fft": N_FFT, "hop": HOP, "window": "hann",
                                 "noise_estimate": "mean power of the 10% lowest-energy frames",
                                 "over_subtraction": 2.0, "floor": 0.02,
                                 "wall_s": round(ss_wall, 2),
                                 "audio_s_per_s": round(test_seconds / ss_wall, 1)},
        "bottleneck": ours or None,
        "groups": groups,
        "files": rows,
    }
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)

    print(f"\n### Speech denoising: espeak-ng speech ({n_espeak} test sentences, "
          f"{len(result['data']['held_out_test_voices'])} of {len(TEST_VOICES)} test voices "
          f"unseen in training) and recorded ALSA speech ({n_alsa} files), "
          f"data seed {args.seed}, model seed 7\n")
    print(f"Train: {len(TRAIN_SENTENCES)} espeak-ng sentences, {train_seconds:.1f} s; "
          f"test: {len(items)} noisy files ({test_seconds:.1f} s), noises "
          f"{', '.join(noises)} at {', '.join(f'{s:g}' for s in snrs)} dB. "
          f"{espeak_version}.\n")
    print("SNRi = output SNR - input SNR (dB, higher is better); LSD in dB (lower is better); "
          "SS = spectral subtraction (alpha 2, floor 0.02, quietest-10%-frames noise).\n")
    print("| noise | SNR | set (files) | input SNR | SNRi SS | **SNRi ours** | segSNRi SS | "
          "**segSNRi ours** | LSD noisy | LSD SS | **LSD ours** |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for g in groups:
        level = g["snr"] if isinstance(g["snr"], str) else f"{g['snr']:g} dB"
        print(f"| {g['noise']} | {level} | {g['set']} ({g['files']}) | {fmt(g['input_snr'])} | "
              f"{fmt(g['ss_snr_improvement'])} | **{fmt(g['ours_snr_improvement'])}** | "
              f"{fmt(g['ss_segsnr_improvement'])} | **{fmt(g['ours_segsnr_improvement'])}** | "
              f"{fmt(g['noisy_lsd'])} | {fmt(g['ss_lsd'])} | **{fmt(g['ours_lsd'])}** |")
    print()
    if ours:
        print(f"- bottleneck train: {ours['train_wall_s']:.1f} s wall on {train_seconds:.1f} s "
              f"of clean audio ({len(TRAIN_SENTENCES)} files"
              f"{', --epochs ' + os.environ['EPOCHS'] if os.environ.get('EPOCHS') else ''}); "
              f"log: {ours['train_log']}")
        print(f"- bottleneck denoise: {ours['denoise_wall_s']:.1f} s wall for {test_seconds:.1f} s "
              f"of audio = {ours['denoise_audio_s_per_s']:.1f} s of audio per s "
              f"(one process, {len(items)} files)")
        if ours["mismatched_outputs"]:
            print(f"- WARNING: {len(ours['mismatched_outputs'])} outputs differ from the input "
                  f"in rate or length (padded/cut): {ours['mismatched_outputs'][:3]}")
    else:
        print("- bottleneck: skipped (--baseline-only)")
    print(f"- spectral subtraction: {ss_wall:.2f} s for {test_seconds:.1f} s of audio = "
          f"{test_seconds / ss_wall:.0f} s of audio per s (numpy/scipy)")
    print(f"\nresults: {os.path.join(work, 'results.json')}")


if __name__ == "__main__":
    main()
