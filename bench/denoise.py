"""Image denoising: bottleneck against the noisy input, a Gaussian filter, a median filter
and non-local means (scikit-image), on the same noisy images, at several Gaussian noise
levels. Called by denoise.sh, which installs what this needs.

Data:
  natural  scikit-image's bundled photographs, as grayscale. Trained on 12 of them (brick,
           cell, chelsea, coffee, grass, gravel, hubble_deep_field, immunohistochemistry,
           microaneurysms, retina, rocket, stereo_motorcycle); tested on 6 others (camera,
           astronaut, coins, moon, clock, page) at full resolution.
  fmnist   Fashion-MNIST: trained on the 60,000 training images, tested on the first N test
           images (28x28).
Noise: clip(clean + N(0, sigma^2)) drawn with numpy seed 1 (test) and, for training, by
bottleneck itself (--noise gaussian:SIGMA, seed 42). Noisy test images are written as 16-bit
PNG so the input is not re-quantised; outputs are read back from bottleneck's 16-bit PNGs.
Baseline settings are picked per noise level to maximise the mean test PSNR (an oracle
choice that favours the baselines): Gaussian sigma, median size, NLM h.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter, median_filter
from skimage import data as skdata
from skimage.color import rgb2gray
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import denoise_nl_means
from skimage.util import img_as_float, img_as_ubyte

TRAIN_NATURAL = ["brick", "cell", "chelsea", "coffee", "grass", "gravel", "hubble_deep_field",
                 "immunohistochemistry", "microaneurysms", "retina", "rocket", "stereo_motorcycle"]
TEST_NATURAL = ["camera", "astronaut", "coins", "moon", "clock", "page"]
FMNIST = "/usr/share/datasets/fashion-mnist"


def gray_u8(name):
    im = getattr(skdata, name)()
    if isinstance(im, tuple):
        im = im[0]
    if im.ndim == 3:
        im = img_as_ubyte(rgb2gray(im[..., :3]))
    return im


def fmnist(name):
    with gzip.open(os.path.join(FMNIST, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)


def prepare(work, dataset, n_test):
    """Writes the clean training folder once; returns it and the clean test images."""
    train = os.path.join(work, dataset, "train")
    done = os.path.join(train, ".complete")
    if dataset == "natural":
        test = [img_as_float(gray_u8(n)) for n in TEST_NATURAL]
        names = TEST_NATURAL
        if not os.path.exists(done):
            os.makedirs(train, exist_ok=True)
            for n in TRAIN_NATURAL:
                Image.fromarray(gray_u8(n)).save(os.path.join(train, f"{n}.png"))
    else:
        images = fmnist("t10k-images-idx3-ubyte.gz")[:n_test]
        test = [img_as_float(im) for im in images]
        names = [f"{i:05d}" for i in range(len(test))]
        if not os.path.exists(done):
            os.makedirs(train, exist_ok=True)
            for i, im in enumerate(fmnist("train-images-idx3-ubyte.gz")):
                Image.fromarray(im).save(os.path.join(train, f"{i:05d}.png"))
    open(done, "w").close()
    return train, test, names


def scores(clean, estimates):
    p = [peak_signal_noise_ratio(c, e, data_range=1.0) for c, e in zip(clean, estimates)]
    s = [structural_similarity(c, e, data_range=1.0) for c, e in zip(clean, estimates)]
    return float(np.mean(p)), float(np.mean(s))


def best(clean, noisy, make, settings):
    """The setting with the best mean PSNR, its (PSNR, SSIM) and seconds per image."""
    top = None
    for s in settings:
        t = time.time()
        out = [np.clip(make(n, s), 0, 1) for n in noisy]
        secs = (time.time() - t) / len(noisy)
        psnr, ssim = scores(clean, out)
        if top is None or psnr > top[1][0]:
            top = (s, (psnr, ssim), secs)
    return top


def run(cmd):
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return time.time() - t, r.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", default="bench/out/denoise")
    ap.add_argument("--datasets", default="natural,fmnist")
    ap.add_argument("--sigmas", default="0.05,0.1,0.2")
    ap.add_argument("--fmnist-test", type=int, default=1000)
    ap.add_argument("--train-args", default="", help="extra arguments for bottleneck train")
    args = ap.parse_args()
    rows = []
    for dataset in args.datasets.split(","):
        train, clean, names = prepare(args.work, dataset, args.fmnist_test)
        for sigma in [float(s) for s in args.sigmas.split(",")]:
            rng = np.random.default_rng(1)
            noisy = [np.clip(c + rng.normal(0, sigma, c.shape), 0, 1) for c in clean]
            folder = os.path.join(args.work, dataset, f"noisy-{sigma}")
            os.makedirs(folder, exist_ok=True)
            for n, im in zip(names, noisy):
                Image.fromarray(np.round(im * 65535).astype(np.uint16)).save(
                    os.path.join(folder, f"{n}.png"))
            noisy = [np.round(im * 65535) / 65535 for im in noisy]
            model = os.path.join(args.work, dataset, f"model-{sigma}.safetensors")
            train_s, log = run([args.bin, "train", train, "--task", "denoise", "--noise",
                                f"gaussian:{sigma}", "-o", model, "-q"] + args.train_args.split())
            out = os.path.join(args.work, dataset, f"denoised-{sigma}")
            apply_s, _ = run([args.bin, "denoise", model, folder, "-o", out, "-q"])
            ours = [np.asarray(Image.open(os.path.join(out, f"{n}.png")), np.float64) / 65535
                    for n in names]
            result = {"dataset": dataset, "sigma": sigma, "images": len(clean),
                      "noisy": scores(clean, noisy),
                      "bottleneck": scores(clean, ours),
                      "bottleneck_train_s": round(train_s, 1),
                      "bottleneck_s_per_image": round(apply_s / len(clean), 4)}
            g = best(clean, noisy, lambda n, s: gaussian_filter(n, s),
                     [0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0])
            result["gaussian"] = g[1]
            result["gaussian_sigma"] = g[0]
            m = best(clean, noisy, lambda n, s: median_filter(n, size=s), [3, 5])
            result["median"] = m[1]
            result["median_size"] = m[0]
            nlm = best(clean, noisy,
                       lambda n, h: denoise_nl_means(n, h=h * sigma, sigma=sigma, patch_size=5,
                                                     patch_distance=6, fast_mode=True),
                       [0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2])
            result["nlm"] = nlm[1]
            result["nlm_h_over_sigma"] = nlm[0]
            result["nlm_s_per_image"] = round(nlm[2], 4)
            rows.append(result)
            print(json.dumps(result), flush=True)
    print("\n| data | sigma | noisy | Gaussian | median | NLM | **bottleneck** |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cell = lambda k: f"{r[k][0]:.2f} / {r[k][1]:.3f}"
        print(f"| {r['dataset']} ({r['images']}) | {r['sigma']} | {cell('noisy')} | "
              f"{cell('gaussian')} | {cell('median')} | {cell('nlm')} | **{cell('bottleneck')}** |")


if __name__ == "__main__":
    main()
