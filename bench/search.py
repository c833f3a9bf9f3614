"""Similarity search on Fashion-MNIST: precision@10 by class label of bottleneck codes
against raw pixels and PCA of the same dimension, and the approximate index against exact
search. Called by search.sh, which installs what this needs.

Protocol: train one bottleneck model on all 60,000 training images (no labels), index the
training images, query with the 10,000 test images; a hit is relevant when its class equals
the query's. Pixels: Euclidean kNN on the 784 values in [0, 1]. PCA: fit on the training
images with as many components as the bottleneck has, Euclidean kNN in that space.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, os.path.dirname(__file__))
from fashion_mnist import idx, write_pngs  # noqa: E402
from model_file import metadata  # noqa: E402


def label_of(path):
    """Class from the image's folder: .../<class>/<index>.png."""
    return int(os.path.basename(os.path.dirname(path)))


def precision(query_labels, hit_labels):
    return float(np.mean(hit_labels == query_labels[:, None]))


def search(bin_, catalogue, test, k, exact):
    cmd = [bin_, "search", catalogue, test, "-k", str(k), "--json", "-q"]
    if exact:
        cmd.append("--exact")
    t = time.time()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    secs = time.time() - t
    rows = [json.loads(line) for line in out.splitlines()]
    return rows, secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "out", "fmnist"))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--train-args", default="", help="extra arguments for bottleneck train")
    args = ap.parse_args()
    xtr, ytr = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    xte, yte = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    train, test = os.path.join(args.work, "train"), os.path.join(args.work, "test")
    write_pngs(xtr, ytr, train)
    write_pngs(xte, yte, test)

    model = os.path.join(args.work, "all.safetensors")
    catalogue = os.path.join(args.work, "all.bnidx")
    t = time.time()
    subprocess.run([args.bin, "train", train, "-o", model, "-q"] + args.train_args.split(),
                   check=True)
    train_s = time.time() - t
    t = time.time()
    subprocess.run([args.bin, "index", model, train, "-o", catalogue, "-q"], check=True)
    index_s = time.time() - t
    exact, exact_s = search(args.bin, catalogue, test, args.k, True)
    graph, graph_s = search(args.bin, catalogue, test, args.k, False)
    q_labels = np.array([label_of(r["query"]) for r in exact])
    hits = lambda rows: np.array([[label_of(h["name"]) for h in r["hits"]] for r in rows])
    recall = np.mean([len({h["item"] for h in g["hits"]} & {h["item"] for h in e["hits"]})
                      / args.k for e, g in zip(exact, graph)])
    latent = metadata(model)["spec"]["latent"]

    xtr_f = xtr.reshape(len(xtr), -1).astype(np.float32) / 255.0
    xte_f = xte.reshape(len(xte), -1).astype(np.float32) / 255.0
    t = time.time()
    pix = NearestNeighbors(n_neighbors=args.k).fit(xtr_f).kneighbors(xte_f)[1]
    pix_s = time.time() - t
    pca = PCA(n_components=latent, random_state=0).fit(xtr_f)
    ztr, zte = pca.transform(xtr_f), pca.transform(xte_f)
    pca_hits = NearestNeighbors(n_neighbors=args.k).fit(ztr).kneighbors(zte)[1]
    # Query order from bottleneck is sorted by path; map test labels the same way.
    result = {
        "k": args.k, "latent": latent, "train_items": len(xtr), "queries": len(exact),
        "bottleneck_exact": precision(q_labels, hits(exact)),
        "bottleneck_graph": precision(q_labels, hits(graph)),
        "graph_recall_vs_exact": float(recall),
        "pixels": precision(yte, ytr[pix]),
        f"pca{latent}": precision(yte, ytr[pca_hits]),
        "train_s": round(train_s, 1), "index_s": round(index_s, 1),
        "search_exact_cli_s": round(exact_s, 1), "search_graph_cli_s": round(graph_s, 1),
        "sklearn_pixel_knn_s": round(pix_s, 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
