"""One-class Fashion-MNIST anomaly detection: bottleneck against PCA and pixel 1-NN.

Protocol: train on the 6,000 training images of one class; test on all 10,000 test images,
the class's own 1,000 are normal and the other 9,000 anomalous; report image AUROC.
Called by fashion_mnist.sh, which installs what this needs."""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from model_file import metadata

SRC = "/usr/share/datasets/fashion-mnist"
NAMES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def idx(name):
    with gzip.open(os.path.join(SRC, name)) as f:
        data = f.read()
    if name.find("labels") >= 0:
        return np.frombuffer(data, np.uint8, offset=8)
    return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)


def write_pngs(images, labels, folder):
    """One folder per class of 28x28 grayscale PNGs (skipped when already there)."""
    done = os.path.join(folder, ".complete")
    if os.path.exists(done):
        return
    for c in range(10):
        os.makedirs(os.path.join(folder, str(c)), exist_ok=True)
    for i, (img, lab) in enumerate(zip(images, labels)):
        Image.fromarray(img, "L").save(os.path.join(folder, str(lab), f"{i:05d}.png"))
    open(done, "w").close()


def mvtec_root(work, c):
    """An MVTec-layout root for class c built from symlinks: train/good = class c,
    test/good = test class c, test/<other> = each other test class."""
    root = os.path.join(work, f"class{c}")
    if os.path.isdir(root):
        return root
    os.makedirs(os.path.join(root, "train"))
    os.makedirs(os.path.join(root, "test"))
    os.symlink(os.path.join(work, "train", str(c)), os.path.join(root, "train", "good"))
    for k in range(10):
        dst = "good" if k == c else NAMES[k]
        os.symlink(os.path.join(work, "test", str(k)), os.path.join(root, "test", dst))
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "out", "fmnist"))
    ap.add_argument("--seed", default="0")
    ap.add_argument("--train-args", default="", help="extra arguments for bottleneck train")
    args = ap.parse_args()
    # The class roots are links into the work folder: absolute, so a relative --work works.
    args.work = os.path.abspath(args.work)

    xtr, ytr = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    xte, yte = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    write_pngs(xtr, ytr, os.path.join(args.work, "train"))
    write_pngs(xte, yte, os.path.join(args.work, "test"))
    xtr_f = xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0
    xte_f = xte.reshape(len(xte), -1).astype(np.float32) / 255.0

    rows = []
    for c in [int(v) for v in args.classes.split(",")]:
        root = mvtec_root(args.work, c)
        model = os.path.join(args.work, f"class{c}.safetensors")
        t0 = time.time()
        cmd = [args.bin, "train", root, "-o", model, "--seed", args.seed, "--quiet"]
        cmd += args.train_args.split()
        subprocess.run(cmd, check=True)
        train_s = time.time() - t0
        out = subprocess.run([args.bin, "eval", model, root, "--quiet"], check=True,
                             capture_output=True, text=True).stdout
        ev = json.loads(out)
        # Baselines on the same split: normal = class c.
        normal = xtr_f[ytr == c]
        labels = (yte != c).astype(int)
        res = {"class": c, "name": NAMES[c], "bottleneck": ev["image_auroc"],
               "bottleneck_by_reduction": ev["image_auroc_by_reduction"],
               "false_alarm_rate_good": ev["false_alarm_rate_good"], "train_seconds": train_s,
               "latent_check": metadata(model)["training"].get("latent_check")}
        for k in (16, 64):
            pca = PCA(n_components=k, random_state=0).fit(normal)
            rec = pca.inverse_transform(pca.transform(xte_f))
            res[f"pca{k}"] = roc_auc_score(labels, ((xte_f - rec) ** 2).mean(1))
        nn = NearestNeighbors(n_neighbors=1).fit(normal)
        res["pixel_1nn"] = roc_auc_score(labels, nn.kneighbors(xte_f)[0][:, 0])
        rows.append(res)
        check = res["latent_check"]
        latent = (f"  latent {check['auroc']:.3f} vs {check['bar']:.3f} "
                  f"{'kept' if check['kept'] else 'left out'}" if check else "")
        print(f"class {c} {NAMES[c]:9s} bottleneck {res['bottleneck']:.4f}  pca16 {res['pca16']:.4f}  "
              f"pca64 {res['pca64']:.4f}  1nn {res['pixel_1nn']:.4f}  ({train_s:.0f}s){latent}",
              flush=True)

    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("bottleneck", "pca16", "pca64", "pixel_1nn")}
    print("mean      " + "  ".join(f"{k} {v:.4f}" for k, v in mean.items()))
    with open(os.path.join(args.work, "results.json"), "w") as f:
        json.dump({"rows": rows, "mean": mean, "train_args": args.train_args, "seed": args.seed}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
