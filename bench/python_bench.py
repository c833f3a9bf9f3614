"""The Python package (bottleneck_ae) measured, peers in the same run.

  overhead  decision_function on 100,000 x 30 rows (a model trained on 10,000 rows of the
            same correlated generator, seed 0) and on 1,000 Fashion-MNIST test images
            (28x28, uint8; model trained on 2,000 training images of class 0, 3 epochs):
            best of 3, against the same `score` call in one Rust process on the same
            arrays (examples/score_in_memory.rs). Goal: Python within 10%.
  pyod      PyOD's AutoEncoder (PyTorch, CPU, 2 threads, its defaults) against
            TableDetector (its defaults) on the table cases of bench/tables.py: wine (each
            class normal, 10 seeds, 10 outliers of the other classes), digits (each digit,
            stratified 50/50 split, seed 0), Fashion-MNIST as 784 columns (each class's
            6,000 training rows, all 10,000 test rows). Mean AUROC, fit and score seconds.
  dask      scoring a CSV larger than a worker's memory limit with dask.distributed
            (LocalCluster, 2 workers of 1 thread and 1 GB each, read_csv blocks of 64 MB)
            against one `bottleneck score` process on the same file: rows/s, peak RSS per
            worker and of the process, and whether every row's score is identical.

Called by python.sh, which builds and installs what this needs. Prints a JSON line per
result."""

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from tables import fmnist  # noqa: E402

import bottleneck_ae as bae  # noqa: E402


def correlated_rows(n, d, seed):
    """Rows of `d` columns driven by 5 hidden factors, with noise."""
    rng = np.random.default_rng(seed)
    mix = np.random.default_rng(123).normal(size=(5, d))
    return (rng.normal(size=(n, 5)) @ mix + 0.1 * rng.normal(size=(n, d))).astype(np.float32)


def best_of(f, repeats=10):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def rust_seconds(example, model, data):
    out = subprocess.run([example, model, data, "10"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def overhead(args):
    work = args.work
    rows = correlated_rows(100_000, 30, 1)
    det = bae.TableDetector(seed=0).fit(correlated_rows(10_000, 30, 0))
    model = os.path.join(work, "rows.safetensors")
    det.save(model)
    np.save(os.path.join(work, "rows.npy"), rows)
    py = best_of(lambda: det.decision_function(rows))
    rs = rust_seconds(args.example, model, os.path.join(work, "rows.npy"))
    print(json.dumps(dict(bench="overhead", data="rows 100000x30", python_s=round(py, 4),
                          rust_s=round(rs, 4), ratio=round(py / rs, 3))), flush=True)

    xtr, ytr = fmnist("train")
    xte, _ = fmnist("test")
    images = (xte[:1000].reshape(-1, 28, 28) * 255).round().astype(np.uint8)
    train = (xtr[ytr == 0][:2000].reshape(-1, 28, 28) * 255).round().astype(np.uint8)
    idet = bae.ImageDetector(epochs=3, seed=0).fit(train)
    model = os.path.join(work, "images.safetensors")
    idet.save(model)
    np.save(os.path.join(work, "images.npy"), images)
    py = best_of(lambda: idet.decision_function(images))
    rs = rust_seconds(args.example, model, os.path.join(work, "images.npy"))
    print(json.dumps(dict(bench="overhead", data="images 1000x28x28", python_s=round(py, 4),
                          rust_s=round(rs, 4), ratio=round(py / rs, 3))), flush=True)


def table_cases(datasets):
    from sklearn.datasets import load_digits, load_wine
    from sklearn.model_selection import train_test_split

    if "wine" in datasets:
        d = load_wine()
        for c in range(3):
            for seed in range(10):
                rng = np.random.default_rng(seed)
                normal = rng.permutation(np.where(d.target == c)[0])
                n_tr = int(0.6 * len(normal))
                outl = rng.choice(np.where(d.target != c)[0], 10, replace=False)
                te = np.concatenate([normal[n_tr:], outl])
                labels = np.r_[np.zeros(len(normal) - n_tr), np.ones(10)]
                yield "wine", d.data[normal[:n_tr]], d.data[te], labels, seed
    if "digits" in datasets:
        d = load_digits()
        xtr, xte, ytr, yte = train_test_split(d.data, d.target, test_size=0.5,
                                              stratify=d.target, random_state=0)
        for c in range(10):
            yield "digits", xtr[ytr == c], xte, (yte != c).astype(int), 0
    if "fmnist" in datasets:
        xtr, ytr = fmnist("train")
        xte, yte = fmnist("test")
        for c in range(10):
            yield "fmnist", xtr[ytr == c], xte, (yte != c).astype(int), 0


def pyod(args):
    import torch
    from pyod.models.auto_encoder import AutoEncoder
    from sklearn.metrics import roc_auc_score

    torch.set_num_threads(2)
    results = {}
    for name, xtr, xte, labels, seed in table_cases(args.datasets.split(",")):
        row = {}
        for who, make in [
            ("ours", lambda: bae.TableDetector(seed=seed)),
            # PyOD's loader drops the last short batch: below its batch of 32 rows (wine
            # class 2 trains on 28) it would train on nothing, so the batch is the rows.
            ("pyod", lambda: AutoEncoder(random_state=seed, verbose=0,
                                         batch_size=min(32, len(xtr)))),
        ]:
            est = make()
            t = time.perf_counter()
            est.fit(xtr.astype(np.float32))
            fit_s = time.perf_counter() - t
            t = time.perf_counter()
            scores = est.decision_function(xte.astype(np.float32))
            score_s = time.perf_counter() - t
            row[who] = (roc_auc_score(labels, scores), fit_s, score_s)
        print(json.dumps(dict(bench="pyod", dataset=name, seed=seed,
                              **{f"{w}_{k}": round(v[i], 4) for w, v in row.items()
                                 for i, k in enumerate(["auroc", "fit_s", "score_s"])})),
              flush=True)
        results.setdefault(name, []).append(row)
    for name, rows in results.items():
        summary = {f"{w}_{k}": round(float(np.mean([r[w][i] for r in rows])), 4)
                   for w in ["ours", "pyod"] for i, k in enumerate(["auroc", "fit_s", "score_s"])}
        print(json.dumps(dict(bench="pyod", dataset=name, cases=len(rows), mean=True, **summary)),
              flush=True)


def peak_rss_of(pid, stop, out):
    """Samples a process's resident memory (and its children's) until `stop` is set."""
    import psutil

    proc = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    out.append(peak)


def dask_bench(args):
    import dask.dataframe as dd
    import pandas as pd
    import psutil
    from dask.distributed import Client, LocalCluster

    from bottleneck_ae.dask import score_dataframe

    work = args.work
    d = 30
    columns = [f"c{j}" for j in range(d)]
    model = os.path.join(work, "dask.safetensors")
    det = bae.TableDetector(seed=0).fit(pd.DataFrame(correlated_rows(20_000, d, 0), columns=columns))
    det.save(model)
    data = os.path.join(work, "dask_rows.csv")
    if not os.path.exists(data) or os.path.getsize(data) < args.gb * 0.95e9:
        with open(data, "w") as f:
            f.write(",".join(columns) + "\n")
            chunk, seed = 200_000, 1
            while f.tell() < args.gb * 1e9:
                rows = correlated_rows(chunk, d, seed)
                np.savetxt(f, rows, delimiter=",", fmt="%.7g")
                seed += 1
    size = os.path.getsize(data)

    out = os.path.join(work, "dask_cli.csv")
    t = time.perf_counter()
    p = subprocess.Popen([args.bin, "--quiet", "score", model, data, "-o", out])
    stop, peak = threading.Event(), []
    th = threading.Thread(target=peak_rss_of, args=(p.pid, stop, peak))
    th.start()
    p.wait()
    cli_s = time.perf_counter() - t
    stop.set()
    th.join()
    cli = pd.read_csv(out)

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GB",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        stops, peaks, threads = [], [], []
        for pid in pids:
            s, o = threading.Event(), []
            th = threading.Thread(target=peak_rss_of, args=(pid, s, o))
            th.start()
            stops.append(s)
            peaks.append(o)
            threads.append(th)
        t = time.perf_counter()
        parts = dd.read_csv(data, blocksize="64MB", dtype=np.float64)
        target = os.path.join(work, "dask_scores")
        score_dataframe(parts, model, client).to_parquet(target, overwrite=True)
        dask_s = time.perf_counter() - t
        for s, th in zip(stops, threads):
            s.set()
            th.join()
    # Partition order, as written (a plain read_parquet of the folder sorts file names).
    scored = dd.read_parquet(target).compute()
    same = bool((scored["score"].to_numpy() == cli["score"].to_numpy(dtype=np.float32)).all()
                and len(scored) == len(cli))
    n = len(cli)
    print(json.dumps(dict(bench="dask", rows=n, csv_gb=round(size / 1e9, 2),
                          cli_rows_per_s=round(n / cli_s), cli_peak_rss_mb=round(peak[0] / 2**20),
                          dask_rows_per_s=round(n / dask_s),
                          dask_worker_peak_rss_mb=[round(p[0] / 2**20) for p in peaks],
                          worker_memory_limit_mb=1000, identical_scores=same)), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--example", required=True)
    ap.add_argument("--work", default="bench/out/python")
    ap.add_argument("--benches", default="overhead,pyod,dask")
    ap.add_argument("--datasets", default="wine,digits,fmnist")
    ap.add_argument("--gb", type=float, default=2.0, help="size of the dask bench's CSV")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    benches = args.benches.split(",")
    if "overhead" in benches:
        overhead(args)
    if "dask" in benches:
        dask_bench(args)
    if "pyod" in benches:
        pyod(args)


if __name__ == "__main__":
    main()
