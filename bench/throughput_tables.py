"""Training and scoring throughput of the dense table autoencoder: the same network (input
= values and mask of observed cells, LeakyReLU(0.1) hidden layers, same widths, masking
noise at 20%, masked MSE, Adam, float32, same batch) in PyTorch on CPU with 2 threads and
in bottleneck, on the same number of random rows, in one run (each side run --repeats times,
alternated, medians shown). Scoring: chunks of 4,096 rows,
at least 1,000,000 rows in all. Called by
throughput_tables.sh."""

import argparse
import json
import statistics
import subprocess
import time

import torch
from torch import nn


class DenseAE(nn.Module):
    """Mirror of bottleneck's DenseAutoencoder (crates/bottleneck/src/model/dense.rs)."""

    def __init__(self, d, hidden, latent):
        super().__init__()
        act = nn.LeakyReLU(0.1)
        enc, w = [], 2 * d
        for h in hidden:
            enc += [nn.Linear(w, h), act]
            w = h
        self.encoder = nn.Sequential(*enc, nn.Linear(w, latent))
        dec, w = [], latent
        for h in reversed(hidden):
            dec += [nn.Linear(w, h), act]
            w = h
        self.decoder = nn.Sequential(*dec, nn.Linear(w, d))

    def forward(self, x, mask):
        return self.decoder(self.encoder(torch.cat([x * mask, mask], 1)))


def torch_run(d, rows, batch, epochs, hidden, latent):
    torch.manual_seed(0)
    x = torch.rand(rows, d) * 4 - 2
    model = DenseAE(d, hidden, latent)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t = time.time()
    for _ in range(epochs):
        perm = torch.randperm(rows)
        for i in range(0, rows, batch):
            xb = x[perm[i:i + batch]]
            shown = (torch.rand_like(xb) >= 0.2).float()
            weight = shown + (1 - shown) * 4.0
            y = model(xb, shown)
            loss = (((y - xb) ** 2) * weight).sum() / weight.sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s = time.time() - t
    passes = -(-1000000 // rows)  # at least 1,000,000 rows scored, as in the example
    t = time.time()
    with torch.no_grad():
        for _ in range(passes):
            for i in range(0, rows, 4096):
                xb = x[i:i + 4096]
                ((model(xb, torch.ones_like(xb)) - xb) ** 2).sum(1).tolist()
    score_s = time.time() - t
    return rows * epochs / train_s, rows * passes / score_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--example", required=True, help="path of the built throughput_tables example")
    ap.add_argument("--shapes", default="13:20000,64:20000,784:5000",
                    help="features:rows pairs, comma-separated")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3,
                    help="runs of each side per shape, alternated; the table shows their medians")
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows_out = []
    for pair in a.shapes.split(","):
        d, rows = (int(v) for v in pair.split(":"))
        # The sides take turns, so a slow spell of the machine falls on both; one run of
        # each swung by 20-40% from run to run.
        runs = []
        for i in range(a.repeats):
            out = subprocess.run([a.example, str(d), str(rows), str(a.batch), str(a.epochs)],
                                 check=True, capture_output=True, text=True).stdout
            ours = json.loads(out)
            tt, ts = torch_run(d, rows, a.batch, a.epochs, ours["hidden"], ours["latent"])
            runs.append((ours["train_rows_per_s"], tt, ours["score_rows_per_s"], ts))
            print(f"{d} features, run {i + 1}: train {runs[-1][0]:.0f} vs {tt:.0f}, "
                  f"score {runs[-1][2]:.0f} vs {ts:.0f} rows/s (bottleneck vs pytorch)", flush=True)
        med = [statistics.median(r[j] for r in runs) for j in range(4)]
        shape = f"{2 * d}-{'-'.join(map(str, ours['hidden']))}-{ours['latent']}"
        rows_out.append(f"| {d} | {rows} | {shape} | {med[0]:.0f} | {med[1]:.0f} | "
                        f"{med[0] / med[1]:.2f}x | {med[2]:.0f} | {med[3]:.0f} | {med[2] / med[3]:.2f}x |")
    print(f"\nmedians of {a.repeats} runs a side:")
    print("| features | rows | shape | train rows/s ours | PyTorch | ratio | score rows/s ours | PyTorch | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows_out))
    print(f"\nbatch {a.batch}, {a.epochs} epochs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
