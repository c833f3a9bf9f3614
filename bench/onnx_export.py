"""ONNX export against bottleneck on the same inputs and the same machine (called by
onnx.sh; not onnx.py, which would shadow the package): scoring samples/s of onnxruntime (CPU, 2 intra-op threads, batches as bottleneck
scores them) and of bottleneck in-process (examples/score_in_memory.rs, best of --repeats)
and through `bottleneck score` on files (decoding and CSV writing included); file sizes;
the largest score difference relative to the scores' scale and the verdicts that differ.
Prints one JSON line per network, then a markdown table."""

import argparse
import csv
import json
import os
import subprocess
import time

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image


def sh(*args):
    subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)


def best_of(f, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def session(path):
    onnx.checker.check_model(onnx.load(path), full_check=True)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def run_batches(sess, name, x, batch):
    out = [sess.run(["score", "is_anomaly"], {name: x[i : i + batch]}) for i in range(0, len(x), batch)]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def cli_scores(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["score"]) for r in rows], np.float32),
            np.array([r["is_anomaly"] == "1" for r in rows]))


def in_process(example, model, data, repeats):
    out = subprocess.run([example, model, data, str(repeats)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def compare(name, n, ours, cli_s, ort_s, model, onnx_path, scores, onnx_scores, flags, onnx_flags):
    scale = max(1.0, float(np.abs(scores).max()))
    r = dict(network=name, samples=n, bottleneck_in_process_per_s=round(n / ours, 1),
             bottleneck_cli_per_s=round(n / cli_s, 1), onnxruntime_per_s=round(n / ort_s, 1),
             bottleneck_vs_onnxruntime=round(ort_s / ours, 3),
             model_file_kb=os.path.getsize(model) // 1024, onnx_kb=os.path.getsize(onnx_path) // 1024,
             max_score_diff_over_scale=float(np.abs(onnx_scores - scores).max() / scale),
             verdicts_differing=int((onnx_flags != flags).sum()))
    print(json.dumps(r), flush=True)
    return r


def images_case(a):
    folder = os.path.join(a.work, "boards", "train", "good")
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".png"))[: a.images]
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB").resize((64, 64), Image.BILINEAR)) for f in files])
    test = os.path.join(a.work, "images")
    os.makedirs(test, exist_ok=True)
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(os.path.join(test, f"{i:04}.png"))
    model = os.path.join(a.work, "img.safetensors")
    onnx_path = os.path.join(a.work, "img.onnx")
    if not os.path.exists(model):
        sh(a.bin, "--quiet", "train", folder, "-o", model, "--image-size", 64, "--width", 32,
           "--latent", 64, "--epochs", 2, "--seed", 1)
    sh(a.bin, "--quiet", "export", model, "-o", onnx_path)
    np.save(os.path.join(a.work, "images.npy"), pixels)
    ours = in_process(a.example, model, os.path.join(a.work, "images.npy"), a.repeats)
    out = os.path.join(a.work, "scores.csv")
    t = time.perf_counter()
    sh(a.bin, "--quiet", "score", model, test, "-o", out)
    cli_s = time.perf_counter() - t
    scores, flags = cli_scores(out)
    sess = session(onnx_path)
    x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255))
    ort_s = best_of(lambda: run_batches(sess, "image", x, 32), a.repeats)
    got, got_flags = run_batches(sess, "image", x, 32)
    return compare("images 64x64x3 (throughput.sh)", len(x), ours, cli_s, ort_s, model, onnx_path,
                   scores, got, flags, got_flags)


def table_case(a):
    rng = np.random.default_rng(1)
    mix = np.random.default_rng(123).normal(size=(8, 64))

    def rows(n):
        return (rng.normal(size=(n, 8)) @ mix + 0.1 * rng.normal(size=(n, 64))).astype(np.float32)

    header = ",".join(f"x{i}" for i in range(64))
    train_csv, test_csv = os.path.join(a.work, "train.csv"), os.path.join(a.work, "rows.csv")
    test = rows(a.rows)
    np.savetxt(train_csv, rows(10_000), delimiter=",", header=header, comments="", fmt="%.9g")
    np.savetxt(test_csv, test, delimiter=",", header=header, comments="", fmt="%.9g")
    test = np.loadtxt(test_csv, delimiter=",", skiprows=1, dtype=np.float32)
    model = os.path.join(a.work, "table.safetensors")
    onnx_path = os.path.join(a.work, "table.onnx")
    sh(a.bin, "--quiet", "train", train_csv, "-o", model, "--epochs", 5, "--seed", 1)
    sh(a.bin, "--quiet", "export", model, "-o", onnx_path)
    np.save(os.path.join(a.work, "rows.npy"), test)
    ours = in_process(a.example, model, os.path.join(a.work, "rows.npy"), a.repeats)
    out = os.path.join(a.work, "table_scores.csv")
    t = time.perf_counter()
    sh(a.bin, "--quiet", "score", model, test_csv, "-o", out)
    cli_s = time.perf_counter() - t
    scores, flags = cli_scores(out)
    sess = session(onnx_path)
    ort_s = best_of(lambda: run_batches(sess, "rows", test, 4096), a.repeats)
    got, got_flags = run_batches(sess, "rows", test, 4096)
    return compare("table 64 columns", len(test), ours, cli_s, ort_s, model, onnx_path,
                   scores, got, flags, got_flags)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--example", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    results = [images_case(a), table_case(a)]
    print("\n| network | bottleneck in-process /s | bottleneck score (files) /s | onnxruntime /s "
          "| bottleneck / onnxruntime | model file | ONNX | max score diff / scale | verdicts differing |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['network']} | {r['bottleneck_in_process_per_s']} | {r['bottleneck_cli_per_s']} "
              f"| {r['onnxruntime_per_s']} | {r['bottleneck_vs_onnxruntime']:.2f}x "
              f"| {r['model_file_kb']} KB | {r['onnx_kb']} KB | {r['max_score_diff_over_scale']:.1e} "
              f"| {r['verdicts_differing']} of {r['samples']} |")


if __name__ == "__main__":
    main()
