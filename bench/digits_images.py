"""One-class scikit-learn digits as 8x8 grayscale images: how the image detector's two score
parts (map score and latent nearest-neighbour distance) rank, and each way to join them.

For each digit c (seed 0): two thirds of its ~180 images train (the default cross-conformal
ensemble: under 1,000 images of at most 32 px), the other third are test/good, and 200 images
of the other digits (the same draw for every method) are test/anomalous. `eval` reports the
image AUROC of the model's own score and of each part and join (`knn_parts`). PCA (90% of
the variance, fitted on the same training images; score = reconstruction MSE) and pixel 1-NN
are measured beside it.

Usage: python digits_images.py --bin target/release/bottleneck [--digits 0,1,...] [--seed 0]
Called by digits_images.sh."""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

JOINS = ("map_only", "knn_only", "sum", "max", "log_sum_exp")


def write(folder, x):
    os.makedirs(folder)
    for i, row in enumerate(x):
        pixels = np.clip(np.rint(row.reshape(8, 8) * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(os.path.join(folder, f"{i:05d}.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--digits", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--seed", default="0")
    a = ap.parse_args()
    d = load_digits()
    x, y = d.data.astype(np.float32) / 16.0, d.target
    rows = []
    for c in [int(v) for v in a.digits.split(",")]:
        rng = np.random.default_rng(int(a.seed) + c)
        own = x[y == c][rng.permutation(int((y == c).sum()))]
        n_train = 2 * len(own) // 3
        train, good = own[:n_train], own[n_train:]
        others = x[y != c]
        bad = others[rng.choice(len(others), 200, replace=False)]
        labels = np.r_[np.zeros(len(good)), np.ones(len(bad))]
        with tempfile.TemporaryDirectory() as work:
            write(os.path.join(work, "train", "good"), train)
            write(os.path.join(work, "test", "good"), good)
            write(os.path.join(work, "test", "other"), bad)
            model = os.path.join(work, "m.safetensors")
            t = time.perf_counter()
            subprocess.run([a.bin, "--quiet", "train", work, "-o", model, "--seed", a.seed],
                           check=True)
            secs = time.perf_counter() - t
            report = json.loads(subprocess.run([a.bin, "--quiet", "eval", model, work],
                                               check=True, capture_output=True, text=True).stdout)
        test = np.r_[good, bad]
        pca = PCA(n_components=0.9, random_state=0).fit(train)
        rebuilt = pca.inverse_transform(pca.transform(test))
        nn = NearestNeighbors(n_neighbors=1).fit(train).kneighbors(test)[0][:, 0]
        row = {"digit": c, "train": len(train), "bottleneck": report["image_auroc"],
               # Without a latent part (the training images' check left it out) every
               # join is the map alone.
               "latent": "kept" if report.get("knn_parts") else "left out",
               **{j: (report.get("knn_parts") or {}).get(j, float("nan")) for j in JOINS},
               "pca90": roc_auc_score(labels, ((test - rebuilt) ** 2).mean(1)),
               "pixel_1nn": roc_auc_score(labels, nn), "train_s": round(secs, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    cols = ["bottleneck", *JOINS, "pca90", "pixel_1nn"]
    print("\n| digit | " + " | ".join(cols) + " | latent part | train s |")
    print("|---" * (len(cols) + 3) + "|")
    for r in rows:
        print(f"| {r['digit']} | " + " | ".join(f"{r[k]:.4f}" for k in cols)
              + f" | {r['latent']} | {r['train_s']} |")
    print("| **mean** | " + " | ".join(f"**{np.mean([r[k] for r in rows]):.4f}**" for k in cols)
          + " | | |")


if __name__ == "__main__":
    main()
