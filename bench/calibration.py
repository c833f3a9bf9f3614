"""Realised false-alarm rates of small training sets, over seeds (issue 17's measurement).

For each case, normal-sample count n and seed: draw n normal samples, train, and score
fresh normal samples (never trained or calibrated on) and anomalies. Reported per case, n
and requested rate (0.05 and 0.01): the mean realised false-alarm rate on the fresh normal
samples, its 10th and 90th percentiles over seeds, and the mean AUROC, for
  single    bottleneck with `--folds 1`: one network, split-conformal p-values on the 15%
            held out, flagged at p <= fpr (the effective rate when too few were held out)
  cross     bottleneck's default up to 1,000 samples (tables up to 1,000 rows: 5 networks;
            images up to 1,000 of at most 32 px: 2), each trained without one fold,
            cross-conformal p-values on every sample's out-of-fold score
  pyod      PyOD's AutoEncoder (its defaults, CPU) with its contamination rule: flagged
            above the (1 - contamination) quantile of its training scores
  then      another bottleneck binary's default (--then-bin): calibration.sh --then COMMIT
            builds that commit, e.g. 3a2a562, the single split as it was when issue 17 was
            filed, so that its training time is measured on the same machine and draws
Cases (tables as bench/tables.sh reads them, images as bench/fashion_mnist.sh does):
  fmnist      Fashion-MNIST as 784 columns: class c's training rows are the pool, its 1,000
              test rows the fresh normals, the other classes' first 1,000 test rows anomalies
  digits      scikit-learn's digits: digit c's rows are the pool (about 180: n up to 100,
              the rest fresh normals), 200 rows of other digits anomalies
  fmnist_img  the fmnist case as 28x28 grayscale PNGs (bottleneck's image detector; PyOD
              reads the same pixels as 784 columns)
  digits_img  the digits case as 8x8 grayscale PNGs
Extra training flags for bottleneck (both methods) go after --train-args=.
Called by calibration.sh. Prints a JSON line per run and a summary table."""

import argparse
import csv
import json
import os
import subprocess
import shlex
import shutil
import tempfile
import time

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from model_file import metadata
from tables import fmnist, write_table

RATES = (0.05, 0.01)


def cases(names, classes):
    """(name, pool, fresh normals or None, anomalies, image side or None for a table)."""
    for kind, side in (("fmnist", None), ("fmnist_img", 28)):
        if kind in names:
            xtr, ytr = fmnist("train")
            xte, yte = fmnist("test")
            for c in classes:
                yield (f"{kind}_c{c}", xtr[ytr == c], xte[yte == c], xte[yte != c][:1000], side)
    for kind, side in (("digits", None), ("digits_img", 8)):
        if kind in names:
            d = load_digits()
            x, y = d.data.astype(np.float32), d.target
            if side:
                x = x / 16.0
            rng = np.random.default_rng(0)
            for c in classes:
                pool = x[y == c]
                others = x[y != c]
                yield (f"{kind}_c{c}", pool, None, others[rng.choice(len(others), 200, replace=False)], side)


def read_scores(path):
    """Scores and p-values in input order (image rows are named by their file, in row order)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "path" in rows[0]:
        rows.sort(key=lambda r: r["path"])
    return np.array([float(r["score"]) for r in rows]), np.array([float(r["p_value"]) for r in rows])


def write_images(folder, x, side):
    """Rows of pixel values in [0, 1] as side x side grayscale PNGs named in row order."""
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    for i, row in enumerate(x):
        pixels = np.clip(np.rint(row.reshape(side, side) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(os.path.join(folder, f"{i:05d}.png"))


def bottleneck_run(binary, work, train, test, seed, extra=(), side=None):
    if side:
        trp, tep = os.path.join(work, "train_img"), os.path.join(work, "test_img")
        write_images(trp, train, side)
        write_images(tep, test, side)
    else:
        ext = ".npy" if train.shape[1] > 100 else ".csv"
        names = [f"x{i}" for i in range(train.shape[1])]
        trp, tep = os.path.join(work, "train" + ext), os.path.join(work, "test" + ext)
        write_table(trp, train, names)
        write_table(tep, test, names)
    model, out = os.path.join(work, "m.safetensors"), os.path.join(work, "s.csv")
    t = time.perf_counter()
    subprocess.run([binary, "--quiet", "train", trp, "-o", model, "--seed", str(seed),
                    "--fpr", str(RATES[0]), *extra], check=True)
    secs = time.perf_counter() - t
    subprocess.run([binary, "--quiet", "score", model, tep, "-o", out], check=True)
    scores, p = read_scores(out)
    n_cal = len(metadata(model)["calibration"]["scores"])
    effective = {a: max(a, 1.0 / (n_cal + 1)) for a in RATES}
    return scores, {a: p <= effective[a] for a in RATES}, effective, secs


def pyod_run(train, test, seed):
    from pyod.models.auto_encoder import AutoEncoder

    t = time.perf_counter()
    det = AutoEncoder(random_state=seed, verbose=0, contamination=RATES[0]).fit(train)
    secs = time.perf_counter() - t
    scores = det.decision_function(test)
    flags = {a: scores > np.quantile(det.decision_scores_, 1 - a) for a in RATES}
    return scores, flags, {a: a for a in RATES}, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--cases", default="fmnist,digits")
    ap.add_argument("--classes", default="0")
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--methods", default="single,cross,pyod")
    ap.add_argument("--train-args", default="", help="extra bottleneck train flags, quoted")
    ap.add_argument("--then-bin", help="another bottleneck binary, run with its defaults as method 'then'")
    ap.add_argument("--fresh", choices=("test", "pool"), default="test",
                    help="fresh normals: the test split's (default) or 1,000 unused pool samples "
                         "(the same split as training: no shift between the splits)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    classes = [int(c) for c in a.classes.split(",")]
    sizes = [int(n) for n in a.sizes.split(",")]
    methods = a.methods.split(",")
    if a.then_bin and "then" not in methods:
        methods.append("then")
    if "then" in methods and not a.then_bin:
        ap.error("method 'then' needs --then-bin (calibration.sh --then COMMIT builds one)")
    if "single" in methods and any(t.split("=")[0] == "--folds" for t in shlex.split(a.train_args)):
        ap.error("method 'single' is --folds 1: drop it from --methods when --train-args sets --folds")
    runs = []
    with tempfile.TemporaryDirectory() as work:
        for name, pool, fresh, anomalies, side in cases(a.cases.split(","), classes):
            for n in sizes:
                if n >= len(pool) - (50 if fresh is None else 0):
                    continue
                for seed in range(a.seeds):
                    rng = np.random.default_rng(seed)
                    order = rng.permutation(len(pool))
                    train = pool[order[:n]]
                    if fresh is None:
                        normal = pool[order[n:]]
                    elif a.fresh == "pool":
                        normal = pool[order[n:n + 1000]]
                    else:
                        normal = fresh
                    test = np.vstack([normal, anomalies]).astype(np.float32)
                    labels = np.r_[np.zeros(len(normal)), np.ones(len(anomalies))]
                    for method in methods:
                        if method in ("single", "cross"):
                            extra = ["--folds", "1"] if method == "single" else []
                            extra += shlex.split(a.train_args)
                            scores, flags, eff, secs = bottleneck_run(a.bin, work, train, test, seed, extra, side)
                        elif method == "then":
                            scores, flags, eff, secs = bottleneck_run(a.then_bin, work, train, test, seed, (), side)
                        else:
                            scores, flags, eff, secs = pyod_run(train, test, seed)
                        r = dict(case=name, n=n, seed=seed, method=method,
                                 auroc=roc_auc_score(labels, scores), train_s=round(secs, 2),
                                 **{f"far_{x}": float(flags[x][: len(normal)].mean()) for x in RATES},
                                 **{f"effective_{x}": eff[x] for x in RATES})
                        print(json.dumps(r), flush=True)
                        runs.append(r)
    print("\n| case | n | method | fpr (effective) | mean realised FAR | p10 | p90 | mean AUROC | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    keys = sorted({(r["case"], r["n"], r["method"]) for r in runs}, key=lambda k: (k[0], k[1], k[2]))
    for case, n, method in keys:
        rs = [r for r in runs if (r["case"], r["n"], r["method"]) == (case, n, method)]
        for x in RATES:
            far = np.array([r[f"far_{x}"] for r in rs])
            eff = np.mean([r[f"effective_{x}"] for r in rs])
            print(f"| {case} | {n} | {method} | {x} ({eff:.3f}) | {far.mean():.3f} | {np.percentile(far, 10):.3f} "
                  f"| {np.percentile(far, 90):.3f} | {np.mean([r['auroc'] for r in rs]):.4f} "
                  f"| {np.mean([r['train_s'] for r in rs]):.1f} |")


if __name__ == "__main__":
    main()
