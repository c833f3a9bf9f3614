"""Tables: bottleneck against scikit-learn on the same splits, in the same run.

  detect   AUROC of row scores; peers: PCA reconstruction error, IsolationForest, and the
           nearest-neighbour distance (mean over the 5 nearest training rows, as PyOD's KNN
           with method "mean"); every peer on StandardScaler's columns.
           wine: one class normal (60% train, 40% test) plus 10 rows of the other classes
           as outliers, every class, 10 seeds. digits: stratified 50/50 split (seed 0),
           train on one digit, test on the whole test half, every digit. fmnist: train on
           one class's 6,000 training rows (784 columns), test on all 10,000 test rows.
  impute   20% of cells removed completely at random from held-out rows (20% of the rows,
           seed 0); RMSE on the removed cells in standardised units (scaler fitted on the
           training rows); peers: mean, KNNImputer, IterativeImputer. fmnist uses 10,000
           training and 2,000 held-out rows.
  reduce   1-NN accuracy of Fashion-MNIST codes (20,000 training rows, all 10,000 test
           rows) of dimension 16 and 32, against PCA of the same dimension.

Called by tables.sh, which installs what this needs. Prints a JSON line per result and a
summary table."""

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
from sklearn.datasets import load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors
from sklearn.preprocessing import StandardScaler

from model_file import metadata

FMNIST = "/usr/share/datasets/fashion-mnist"


def fmnist(split):
    prefix = "train" if split == "train" else "t10k"
    with gzip.open(os.path.join(FMNIST, f"{prefix}-images-idx3-ubyte.gz")) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784).astype(np.float32)
    with gzip.open(os.path.join(FMNIST, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return x / 255.0, y


def write_table(path, x, names):
    """CSV with a header (empty cells for NaN), or .npy."""
    if path.endswith(".npy"):
        np.save(path, x.astype(np.float32))
        return
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in x:
            w.writerow(["" if np.isnan(v) else repr(float(v)) for v in row])


def read_column(path, name):
    with open(path) as f:
        return np.array([float(r[name]) for r in csv.DictReader(f)])


class Runner:
    def __init__(self, binary, work, extra):
        self.bin = binary
        self.work = work
        self.extra = extra
        self.classes = range(10)
        os.makedirs(work, exist_ok=True)

    def run(self, *args):
        subprocess.run([self.bin, "--quiet", *args], check=True)

    def train(self, train_path, tag, *extra):
        model = os.path.join(self.work, f"{tag}.safetensors")
        t = time.time()
        self.run("train", train_path, "-o", model, *self.extra, *extra)
        return model, time.time() - t

    def scores(self, model, test_path, tag):
        out = os.path.join(self.work, f"{tag}_scores.csv")
        self.run("score", model, test_path, "-o", out)
        return read_column(out, "score")

    def latent(self, model):
        return metadata(model)["spec"]["latent"]


def pca_error(train, test, k):
    p = PCA(n_components=min(k, train.shape[0] - 1, train.shape[1]), random_state=0).fit(train)
    return ((test - p.inverse_transform(p.transform(test))) ** 2).sum(1)


def detect_case(r, name, tag, xtr, xte, labels, seed, names):
    """Our AUROC and the peers' on one split."""
    ext = ".npy" if xtr.shape[1] > 100 else ".csv"
    trp = os.path.join(r.work, f"{tag}_train{ext}")
    tep = os.path.join(r.work, f"{tag}_test{ext}")
    write_table(trp, xtr, names)
    write_table(tep, xte, names)
    model, secs = r.train(trp, tag, "--seed", str(seed))
    ours = roc_auc_score(labels, r.scores(model, tep, tag))
    k = r.latent(model)
    sc = StandardScaler().fit(xtr)
    a, b = sc.transform(xtr), sc.transform(xte)
    pca_k = roc_auc_score(labels, pca_error(a, b, k))
    p90 = PCA(n_components=0.9, svd_solver="full").fit(a)
    pca_90 = roc_auc_score(labels, ((b - p90.inverse_transform(p90.transform(b))) ** 2).sum(1))
    iso = IsolationForest(random_state=seed).fit(a)
    iforest = roc_auc_score(labels, -iso.score_samples(b))
    knn = roc_auc_score(labels, NearestNeighbors(n_neighbors=5).fit(a).kneighbors(b)[0].mean(1))
    res = dict(task="detect", dataset=name, case=tag, ours=ours, pca_same_k=pca_k,
               pca_90var=pca_90, iforest=iforest, knn5=knn, latent=k,
               train_seconds=round(secs, 2))
    print(json.dumps(res), flush=True)
    return res


def detect(r, datasets):
    out = []
    if "wine" in datasets:
        d = load_wine()
        names = [n.replace("/", "_") for n in d.feature_names]
        for c in range(3):
            for seed in range(10):
                rng = np.random.default_rng(seed)
                normal = rng.permutation(np.where(d.target == c)[0])
                n_tr = int(0.6 * len(normal))
                outl = rng.choice(np.where(d.target != c)[0], 10, replace=False)
                te = np.concatenate([normal[n_tr:], outl])
                labels = np.r_[np.zeros(len(normal) - n_tr), np.ones(10)]
                out.append(detect_case(r, "wine", f"wine_c{c}_s{seed}", d.data[normal[:n_tr]],
                                       d.data[te], labels, seed, names))
    if "digits" in datasets:
        d = load_digits()
        xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.5,
                                              stratify=d.target, random_state=0)
        names = [f"px{i}" for i in range(64)]
        for c in range(10):
            out.append(detect_case(r, "digits", f"digits_c{c}", xtr[ytr == c], xte,
                                   (yte != c).astype(int), 0, names))
    if "fmnist" in datasets:
        xtr, ytr = fmnist("train")
        xte, yte = fmnist("test")
        names = [f"px{i}" for i in range(784)]
        for c in r.classes:
            out.append(detect_case(r, "fmnist", f"fmnist_c{c}", xtr[ytr == c], xte,
                                   (yte != c).astype(int), 0, names))
    return out


def impute_case(r, name, x, names, n_train=None, n_held=None):
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    n_held = n_held or int(0.2 * len(x))
    n_train = n_train or len(x) - n_held
    tr, he = x[order[:n_train]], x[order[n_train:n_train + n_held]]
    mask = rng.random(he.shape) < 0.2
    full = mask.all(1)
    mask[full, 0] = False  # keep one cell of a row that lost every cell
    gappy = he.copy()
    gappy[mask] = np.nan
    sc = StandardScaler().fit(tr)

    def rmse(filled):
        z = sc.transform(filled)
        t = sc.transform(he)
        return float(np.sqrt(((z - t)[mask] ** 2).mean()))

    ext = ".npy" if x.shape[1] > 100 else ".csv"
    trp = os.path.join(r.work, f"imp_{name}_train{ext}")
    gp = os.path.join(r.work, f"imp_{name}_gappy{ext}")
    fp = os.path.join(r.work, f"imp_{name}_filled{ext}")
    write_table(trp, tr, names)
    write_table(gp, gappy, names)
    model, secs = r.train(trp, f"imp_{name}")
    t = time.time()
    r.run("impute", model, gp, "-o", fp)
    ours_s = time.time() - t
    if ext == ".npy":
        filled = np.load(fp)
    else:
        filled = np.loadtxt(fp, delimiter=",", skiprows=1)
    res = dict(task="impute", dataset=name, ours=rmse(filled), train_seconds=round(secs, 2),
               impute_seconds=round(ours_s, 2))
    res["mean"] = rmse(SimpleImputer().fit(tr).transform(gappy))
    t = time.time()
    res["knn"] = rmse(KNNImputer().fit(tr).transform(gappy))
    res["knn_seconds"] = round(time.time() - t, 2)
    t = time.time()
    it = IterativeImputer(random_state=0, max_iter=10,
                          n_nearest_features=None if x.shape[1] <= 100 else 50)
    res["iterative"] = rmse(it.fit(tr).transform(gappy))
    res["iterative_seconds"] = round(time.time() - t, 2)
    print(json.dumps(res), flush=True)
    return res


def impute(r, datasets):
    out = []
    if "wine" in datasets:
        d = load_wine()
        out.append(impute_case(r, "wine", d.data, [n.replace("/", "_") for n in d.feature_names]))
    if "digits" in datasets:
        d = load_digits()
        out.append(impute_case(r, "digits", d.data, [f"px{i}" for i in range(64)]))
    if "fmnist" in datasets:
        x, _ = fmnist("train")
        out.append(impute_case(r, "fmnist", x, [f"px{i}" for i in range(784)], 10000, 2000))
    return out


def reduce(r, _datasets):
    xtr, ytr = fmnist("train")
    xte, yte = fmnist("test")
    xtr, ytr = xtr[:20000], ytr[:20000]
    trp = os.path.join(r.work, "reduce_train.npy")
    tep = os.path.join(r.work, "reduce_test.npy")
    np.save(trp, xtr)
    np.save(tep, xte)
    out = []
    for k in (16, 32):
        model, secs = r.train(trp, f"reduce_{k}", "--latent", str(k))
        codes = {}
        for split, path in (("train", trp), ("test", tep)):
            cp = os.path.join(r.work, f"reduce_{k}_{split}_codes.npy")
            r.run("encode", model, path, "-o", cp)
            codes[split] = np.load(cp)
        knn = KNeighborsClassifier(1).fit(codes["train"], ytr)
        ours = float((knn.predict(codes["test"]) == yte).mean())
        p = PCA(n_components=k, random_state=0).fit(xtr)
        knn = KNeighborsClassifier(1).fit(p.transform(xtr), ytr)
        pca = float((knn.predict(p.transform(xte)) == yte).mean())
        res = dict(task="reduce", dataset="fmnist", dim=k, ours=ours, pca=pca,
                   train_seconds=round(secs, 2))
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


def summary(results):
    print("\n| task | dataset | cases | ours | peers |")
    print("|---|---|---|---|---|")
    groups = {}
    for res in results:
        groups.setdefault((res["task"], res["dataset"], res.get("dim")), []).append(res)
    for (task, ds, dim), rs in groups.items():
        keys = [k for k in rs[0] if k not in ("task", "dataset", "case", "dim", "latent")
                and not k.endswith("seconds")]
        mean = {k: float(np.mean([x[k] for x in rs])) for k in keys}
        peers = ", ".join(f"{k} {mean[k]:.4f}" for k in keys if k != "ours")
        label = f"{ds} (dim {dim})" if dim else ds
        secs = np.mean([x["train_seconds"] for x in rs])
        print(f"| {task} | {label} | {len(rs)} | {mean['ours']:.4f} | {peers} | "
              f"train {secs:.1f}s |")
        if task == "detect":
            worse = [x["case"] for x in rs
                     if x["ours"] < max(x["pca_same_k"], x["pca_90var"], x["iforest"], x["knn5"])]
            print(f"|  | cases below the best peer: {len(worse)} {worse[:6]} | | | |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "out", "tables"))
    ap.add_argument("--tasks", default="detect,impute,reduce")
    ap.add_argument("--datasets", default="wine,digits,fmnist")
    ap.add_argument("--fmnist-classes", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--train-args", default="", help="extra arguments for `train`")
    a = ap.parse_args()
    r = Runner(a.bin, a.work, a.train_args.split())
    r.classes = [int(c) for c in a.fmnist_classes.split(",")]
    datasets = a.datasets.split(",")
    results = []
    t = time.time()
    for task in a.tasks.split(","):
        results += {"detect": detect, "impute": impute, "reduce": reduce}[task](r, datasets)
    summary(results)
    print(f"\ntotal {time.time() - t:.0f}s; train arguments: {a.train_args or '(defaults)'}")


if __name__ == "__main__":
    sys.exit(main())
