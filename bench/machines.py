"""Anomalous machine sounds on SYNTHETIC data: bottleneck against the DCASE-style baselines
(PCA reconstruction error and nearest-neighbour distance on stacked log-mel frames), all
scored on the same files in the same run. Called by machines.sh, which installs what this
needs.

Data: `bottleneck machines ROOT --seed SEED` writes synthetic machine recordings (16 kHz
mono, 2 s) in the MVTec-like layout ROOT/train/good, ROOT/test/good and ROOT/test/<fault>
(bearing_clicks, imbalance, pitch_drift). They are generated, not recorded: the numbers say
how each method separates these synthetic faults, not how it does on DCASE/MIMII data.

Ours: bottleneck train ROOT/train/good --seed SEED [--epochs $EPOCHS], then
bottleneck score MODEL ROOT/test -o scores.csv (path,score,p_value,is_anomaly,note).

Baselines, on the features of the DCASE 2020 task 2 baseline: librosa log-mel (n_fft 1024,
hop 512, 128 mels, power 2, 10 log10(mel + float32 eps)), 5 consecutive frames stacked into
640-d vectors, each dimension standardised with the training vectors' mean and std.
  PCA-k   sklearn PCA(k) fitted on the training vectors; file score = mean over its vectors
          of the mean squared reconstruction error.
  1-NN    sklearn NearestNeighbors (brute force, Euclidean) on the training vectors (a seeded
          subsample of --nn-max if there are more); file score = mean over its vectors of
          the distance to the nearest training vector.
Metrics: AUROC and pAUC with max FPR 0.1 as DCASE computes it, sklearn
roc_auc_score(y, score, max_fpr=0.1), which is the McClish-standardised partial AUC (0.5 =
chance, 1 = perfect); per fault (test/good against test/<fault>) and over all faults pooled.
"""

import argparse
import csv
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import librosa
import numpy as np
import sklearn
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

N_FFT, HOP, N_MELS, FRAMES = 1024, 512, 128, 5


def vectors(path):
    y, sr = librosa.load(path, sr=None, mono=True)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=N_FFT, hop_length=HOP,
                                         n_mels=N_MELS, power=2.0)
    logmel = 10.0 * np.log10(mel + np.finfo(np.float32).eps)
    n = logmel.shape[1] - FRAMES + 1
    out = np.zeros((max(n, 0), N_MELS * FRAMES), np.float64)
    for t in range(FRAMES):
        out[:, N_MELS * t:N_MELS * (t + 1)] = logmel[:, t:t + n].T
    return out, len(y) / sr


def features(paths):
    t = time.time()
    vecs, secs = zip(*[vectors(p) for p in paths])
    return list(vecs), float(sum(secs)), time.time() - t


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


def metrics(labels, scores, faults):
    """{fault or 'all': (AUROC, pAUC)} from per-file labels ('good' or a fault) and scores."""
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    out = {}
    for f in faults + ["all"]:
        sel = (labels == "good") | ((labels == f) if f != "all" else (labels != "good"))
        y = (labels[sel] != "good").astype(int)
        s = scores[sel]
        if y.min() == y.max():
            out[f] = (None, None)
            continue
        out[f] = (float(roc_auc_score(y, s)), float(roc_auc_score(y, s, max_fpr=0.1)))
    return out


def read_ours(csv_path, test_dir, test_files):
    """Scores of bottleneck's CSV in the order of test_files (NaN where not scored)."""
    by_path = {os.path.realpath(p): i for i, p in enumerate(test_files)}
    scores = np.full(len(test_files), np.nan)
    flagged = np.zeros(len(test_files), bool)
    notes, unknown = [], []
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            p = row["path"]
            cands = [p] if os.path.isabs(p) else [p, os.path.join(test_dir, p)]
            i = next((by_path[os.path.realpath(c)] for c in cands
                      if os.path.realpath(c) in by_path), None)
            if i is None:
                unknown.append(p)
                continue
            note = (row.get("note") or "").strip()
            if note or not (row.get("score") or "").strip():
                notes.append(f"{p}: {note or 'no score'}")
                continue
            scores[i] = float(row["score"])
            flagged[i] = (row.get("is_anomaly") or "").strip().lower() in ("true", "1", "yes")
    return scores, flagged, notes, unknown


def fmt(v):
    return "–" if v is None else f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="bottleneck binary (not needed with --data and "
                                  "--baseline-only)")
    ap.add_argument("--work", default="bench/out/machines")
    ap.add_argument("--seed", type=int, default=7,
                    help="seed of bottleneck machines, bottleneck train and the baselines")
    ap.add_argument("--severity", default="1",
                    help="fault strength of bottleneck machines (1 plain, 0.15 subtle)")
    ap.add_argument("--data", help="an existing MVTec-layout root instead of generating one "
                                   "with `bottleneck machines`")
    ap.add_argument("--baseline-only", action="store_true", help="skip bottleneck train/score")
    ap.add_argument("--pca", default="8,64", help="PCA component counts")
    ap.add_argument("--nn-max", type=int, default=20000,
                    help="training vectors kept for the nearest-neighbour baseline")
    ap.add_argument("--train-args", default="", help="extra arguments for bottleneck train")
    args = ap.parse_args()
    if not args.bin and not (args.data and args.baseline_only):
        sys.exit("--bin is required unless --data and --baseline-only are given")
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)

    gen_wall = None
    if args.data:
        root = os.path.abspath(args.data)
        source = f"existing folder {root}"
    else:
        root = os.path.join(work, "data")
        if os.path.exists(root):
            shutil.rmtree(root)
        gen_wall, _ = run([args.bin, "machines", root, "--seed", str(args.seed),
                           "--severity", args.severity])
        source = f"bottleneck machines --seed {args.seed} --severity {args.severity}"
    train_dir = os.path.join(root, "train", "good")
    test_dir = os.path.join(root, "test")
    train_files = sorted(glob.glob(os.path.join(train_dir, "*.wav")))
    test_files = sorted(glob.glob(os.path.join(test_dir, "*", "*.wav")))
    labels = [os.path.basename(os.path.dirname(p)) for p in test_files]
    faults = sorted(set(labels) - {"good"})
    counts = {"train_good": len(train_files),
              **{f"test_{k}": labels.count(k) for k in ["good"] + faults}}
    if not train_files or "good" not in labels or not faults:
        sys.exit(f"{root} lacks train/good, test/good or a fault folder: {counts}")
    print(f"data: {counts}", file=sys.stderr)

    vectors(train_files[0])  # warm-up (librosa's lazy imports and caches), not timed
    train_vecs, train_secs, train_feat_s = features(train_files)
    test_vecs, test_secs, test_feat_s = features(test_files)
    X = np.concatenate(train_vecs)
    t = time.time()
    mu, sd = X.mean(axis=0), X.std(axis=0)
    sd[sd < 1e-12] = 1.0
    Xs = (X - mu) / sd
    standardise_s = time.time() - t
    methods = {}

    for k in [int(c) for c in args.pca.split(",")]:
        t = time.time()
        pca = PCA(n_components=k, random_state=args.seed).fit(Xs)
        fit_s = time.time() - t + standardise_s
        t = time.time()
        scores = []
        for v in test_vecs:
            z = (v - mu) / sd
            rec = pca.inverse_transform(pca.transform(z))
            scores.append(float(np.mean(np.mean((z - rec) ** 2, axis=1))))
        methods[f"PCA-{k}"] = {"scores": scores, "fit_s": fit_s, "score_s": time.time() - t}

    rng = np.random.default_rng(args.seed)
    keep = Xs if len(Xs) <= args.nn_max else Xs[rng.choice(len(Xs), args.nn_max, replace=False)]
    t = time.time()
    nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(keep)
    fit_s = time.time() - t + standardise_s
    t = time.time()
    scores = [float(np.mean(nn.kneighbors((v - mu) / sd)[0][:, 0])) for v in test_vecs]
    methods["1-NN"] = {"scores": scores, "fit_s": fit_s, "score_s": time.time() - t,
                       "train_vectors": int(len(keep))}
    for m in methods.values():
        m["train_s"] = train_feat_s + m["fit_s"]
        m["test_s"] = test_feat_s + m["score_s"]

    ours = None
    if not args.baseline_only:
        model = os.path.join(work, "machine.safetensors")
        cmd = [args.bin, "train", train_dir, "-o", model, "--seed", str(args.seed)]
        if os.environ.get("EPOCHS"):
            cmd += ["--epochs", os.environ["EPOCHS"]]
        cmd += args.train_args.split()
        train_wall, train_log = run(cmd)
        csv_path = os.path.join(work, "scores.csv")
        score_wall, _ = run([args.bin, "score", model, test_dir, "-o", csv_path])
        scores, flagged, notes, unknown = read_ours(csv_path, test_dir, test_files)
        missing = [test_files[i] for i in np.flatnonzero(np.isnan(scores))]
        ours = {"train_s": train_wall, "test_s": score_wall, "train_command": " ".join(cmd),
                "train_log": train_log, "unscored": notes, "unknown_paths": unknown,
                "missing_or_unscored": len(missing),
                "flagged": {}}
        ok = ~np.isnan(scores)
        for k in ["good"] + faults:
            sel = ok & np.array([lab == k for lab in labels])
            ours["flagged"][k] = float(np.mean(flagged[sel])) if sel.any() else None
        ours["metrics"] = metrics(np.asarray(labels)[ok], scores[ok], faults)
        ours["scores"] = [None if np.isnan(s) else float(s) for s in scores]
    for m in methods.values():
        m["metrics"] = metrics(labels, m["scores"], faults)

    table = ([("**bottleneck**", ours)] if ours else []) + list(methods.items())
    result = {
        "synthetic": True,
        "data": {"source": source, "root": root, "counts": counts, "faults": faults,
                 "train_audio_s": round(train_secs, 2), "test_audio_s": round(test_secs, 2),
                 "generate_wall_s": gen_wall},
        "features": {"n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS, "frames": FRAMES,
                     "log": "10*log10(mel + float32 eps)", "standardised": True,
                     "train_vectors": int(len(X)), "train_extract_s": round(train_feat_s, 2),
                     "test_extract_s": round(test_feat_s, 2)},
        "pauc": "sklearn roc_auc_score(max_fpr=0.1), McClish-standardised",
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__,
                     "librosa": librosa.__version__, "sklearn": sklearn.__version__},
        "methods": {name.strip("*"): {k: v for k, v in m.items()}
                    for name, m in table},
        "test_files": [os.path.relpath(p, root) for p in test_files],
    }
    with open(os.path.join(work, "results.json"), "w") as f:
        json.dump(result, f, indent=1, default=float)

    print(f"\n### Anomalous machine sounds — SYNTHETIC data ({source}), seed {args.seed}\n")
    print(f"Train: {counts['train_good']} normal clips ({train_secs:.1f} s); test: "
          + ", ".join(f"{counts['test_' + k]} {k}" for k in ["good"] + faults)
          + f" ({test_secs:.1f} s). Generated audio, not recordings: not comparable with "
            "DCASE/MIMII results. Baselines on DCASE 2020 features (128-mel log-mel, 5 frames "
            "= 640-d, standardised). pAUC = sklearn roc_auc_score(max_fpr=0.1), "
            "McClish-standardised, as in the DCASE evaluator. Cells: AUROC / pAUC.\n")
    cols = faults + ["all"]
    print("| method | " + " | ".join(f"{c} AUROC / pAUC" for c in cols)
          + " | train audio s/s | test audio s/s |")
    print("|---|" + "---|" * (len(cols) + 2))
    for name, m in table:
        cells = [f"{fmt(m['metrics'][c][0])} / {fmt(m['metrics'][c][1])}" for c in cols]
        print(f"| {name} | " + " | ".join(cells)
              + f" | {train_secs / m['train_s']:.0f} | {test_secs / m['test_s']:.0f} |")
    print()
    if ours:
        print(f"- bottleneck train: {ours['train_s']:.1f} s wall for {train_secs:.1f} s of audio "
              f"= {train_secs / ours['train_s']:.1f} s of audio per s; log: {ours['train_log']}")
        print(f"- bottleneck score: {ours['test_s']:.1f} s wall for {test_secs:.1f} s of audio "
              f"= {test_secs / ours['test_s']:.1f} s of audio per s (one process)")
        print("- bottleneck flagged (is_anomaly at its calibrated threshold): "
              + ", ".join(f"{k} {100 * v:.0f}%" for k, v in ours["flagged"].items()
                            if v is not None))
        if ours["missing_or_unscored"] or ours["unknown_paths"]:
            print(f"- WARNING: {ours['missing_or_unscored']} test files without a score "
                  f"(left out of the metrics) {ours['unscored'][:3]}; "
                  f"{len(ours['unknown_paths'])} CSV paths not in the test set "
                  f"{ours['unknown_paths'][:3]}")
    else:
        print("- bottleneck: skipped (--baseline-only)")
    print(f"- baselines: log-mel extraction {train_feat_s:.1f} s (train) + {test_feat_s:.1f} s "
          f"(test), counted in every baseline's throughput; fit / score: "
          + "; ".join(f"{n} {m['fit_s']:.2f} / {m['score_s']:.2f} s" for n, m in methods.items())
          + f"; 1-NN on {methods['1-NN']['train_vectors']} of {len(X)} training vectors")
    if gen_wall is not None:
        print(f"- data generation (bottleneck machines): {gen_wall:.1f} s")
    print(f"\nresults: {os.path.join(work, 'results.json')}")


if __name__ == "__main__":
    main()
