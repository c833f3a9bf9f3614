"""Training and scoring throughput: the same conv autoencoder (same layers, batch, float32,
MSE, Adam) in PyTorch on CPU with 2 threads and in bottleneck, on the same images, in one
run. Called by throughput.sh."""

import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np
import torch
from PIL import Image
from torch import nn


def build(channels, size, width, latent):
    """Mirror of bottleneck's ConvAutoencoder (crates/bottleneck/src/model/conv.rs)."""
    depth, side = 0, size
    while side % 2 == 0 and side // 2 >= 4 and depth < 5:
        side //= 2
        depth += 1
    widths = [min(width << i, 4 * width) for i in range(depth)]
    act = nn.LeakyReLU(0.2)
    enc, c = [], channels
    for w in widths:
        enc += [nn.Conv2d(c, w, 4, 2, 1), act]
        c = w
    flat = c * side * side
    dec = []
    ws = widths[::-1] + [widths[0]]
    for a, b in zip(ws[:-1], ws[1:]):
        dec += [nn.ConvTranspose2d(a, b, 4, 2, 1), act]
    dec += [nn.Conv2d(widths[0], channels, 3, 1, 1), nn.Sigmoid()]
    return nn.Sequential(*enc, nn.Flatten(), nn.Linear(flat, latent), nn.Linear(latent, flat), act,
                         nn.Unflatten(1, (c, side, side)), *dec)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--example", required=True, help="path of the built throughput example")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each side, alternated; the figures are their medians")
    ap.add_argument("--device", default="cpu", choices=["cpu", "gpu"],
                    help="gpu: PyTorch on CUDA against bottleneck on Vulkan")
    a = ap.parse_args()
    dev = torch.device("cuda" if a.device == "gpu" else "cpu")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.images) for f in fs if f.endswith(".png"))
    mode = "L" if a.channels == 1 else "RGB"
    x = np.stack([np.asarray(Image.open(f).convert(mode).resize((a.size, a.size), Image.BILINEAR),
                             dtype=np.float32) / 255.0 for f in files])
    x = torch.from_numpy(x.reshape(len(files), a.size, a.size, a.channels).transpose(0, 3, 1, 2).copy())
    x = x.to(dev)

    torch.set_num_threads(2)

    def run_torch():
        torch.manual_seed(0)
        model = build(a.channels, a.size, a.width, a.latent).to(dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train_step(xb):
            loss = ((model(xb) - xb) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        def score(xb):
            with torch.no_grad():
                return ((model(xb) - xb) ** 2).mean(1)

        # The first step (CUDA context, cuDNN autotuning) is timed apart, as bottleneck's is.
        t = time.time()
        train_step(x[:a.batch])
        score(x[:a.batch])
        sync()
        first = time.time() - t
        t = time.time()
        for _ in range(a.epochs):
            perm = torch.randperm(len(x), device=dev)
            for i in range(0, len(x), a.batch):
                train_step(x[perm[i:i + a.batch]])
        sync()
        train = len(x) * a.epochs / (time.time() - t)
        t = time.time()
        for i in range(0, len(x), a.batch):
            score(x[i:i + a.batch])
        sync()
        return {"train_samples_per_s": train, "score_samples_per_s": len(x) / (time.time() - t),
                "first_step_s": first}

    def run_ours():
        ours_device = "vulkan" if a.device == "gpu" else "cpu"
        out = subprocess.run([a.example, a.images, str(a.size), str(a.channels), str(a.width), str(a.latent),
                              str(a.batch), str(a.epochs), ours_device],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out)

    # The two sides take turns, so a slow spell of the machine falls on both; each figure
    # is the median of its runs (one run of each swung by up to 30% from run to run).
    runs = []
    for i in range(a.repeats):
        runs.append({"pytorch": run_torch(), "bottleneck": run_ours()})
        r = runs[-1]
        print(f"run {i + 1}: train {r['bottleneck']['train_samples_per_s']:.1f} vs "
              f"{r['pytorch']['train_samples_per_s']:.1f}, score "
              f"{r['bottleneck']['score_samples_per_s']:.1f} vs {r['pytorch']['score_samples_per_s']:.1f} "
              "samples/s (bottleneck vs pytorch)", flush=True)

    def median(side, key):
        return statistics.median(r[side][key] for r in runs)

    keys = ["train_samples_per_s", "score_samples_per_s", "first_step_s"]
    torch_med = {k: median("pytorch", k) for k in keys}
    ours = {k: median("bottleneck", k) for k in keys}
    res = {"config": vars(a), "images": len(files), "torch_version": torch.__version__,
           "pytorch": torch_med, "bottleneck": ours, "runs": runs}
    res["ratio_train"] = ours["train_samples_per_s"] / torch_med["train_samples_per_s"]
    res["ratio_score"] = ours["score_samples_per_s"] / torch_med["score_samples_per_s"]
    print(f"medians of {a.repeats} runs:")
    print(f"train samples/s: bottleneck {ours['train_samples_per_s']:.1f}  "
          f"pytorch {torch_med['train_samples_per_s']:.1f}  ratio {res['ratio_train']:.2f}")
    print(f"score samples/s: bottleneck {ours['score_samples_per_s']:.1f}  "
          f"pytorch {torch_med['score_samples_per_s']:.1f}  ratio {res['ratio_score']:.2f}")
    print(f"first step s: bottleneck {ours['first_step_s']:.2f}  pytorch {torch_med['first_step_s']:.2f}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
