"""Textured inspection set in the MVTec AD layout, built from scikit-image's bundled texture
photographs, and two classical baselines scored on it.

Usage:
  python bench/textures.py make OUT [--texture brick] [--size 300] [--train 350]
                                    [--test-good 60] [--test-defect 20] [--seed 0]
  python bench/textures.py baselines OUT [--size 128]

Textures: brick, grass, gravel (skimage.data, grayscale 512x512 uint8, bundled with the wheel,
no download). These are the only texture photographs skimage ships offline; the other offline
grayscale images (camera, moon, coins, page, text, clock) are scenes, not textures.

How `make` builds the data (everything drawn from np.random.default_rng(seed)):
  Photo.  The photo (W columns) is split by column: the left 60% (int(0.6*W) columns) is the
    train region, the right 40% the test region. If a size x size crop does not fit the test
    region or the photo height, the whole photo is first upscaled by the integer factor
    f = ceil(max(size / (W - int(0.6*W)), size / H)) with PIL bicubic (for 512x512 and size 300:
    f = 2, a 1024x1024 photo, train columns 0-613, test columns 614-1023).
  Good parts.  A size x size crop at a uniform random position inside the region (train crops
    for OUT/train/good, test crops for OUT/test/*), then jitter: y = (x - m) * c + m * b with m
    the crop mean, contrast c and brightness b each uniform in [0.95, 1.05], then a random
    flip (p=0.5) and a rotation by k*90 degrees (k uniform in 0..3), clipped to [0, 255].
  Defects.  Each defect image is a fresh test crop (made as above) with one defect drawn on it;
    its mask (255 = defect) is OUT/ground_truth/<defect>/NNN_mask.png. Intensities are in grey
    levels 0..255; every defect is clipped to [0, 255].
    scratch  a curved line: a walk of 0.5 px steps, length uniform 30-150 px, start heading
             uniform, curvature uniform +-0.03 rad/px plus small heading noise; width 1-3 px;
             pixels set to x +- U(0.3, 0.6)*255 (bright or dark, p=0.5).
    stain    a soft-edged irregular blob (ellipse with semi-axes uniform 10-40 px, random angle,
             radius wobbled by 2 angular harmonics of +-10%, sigmoid edge ~3 px wide): x is
             multiplied by 1 +- a*w, a uniform 0.15-0.35, w the soft weight; mask = w > 0.5.
    missing  a rectangle, sides uniform 12-50 px, replaced (p=0.5 each) by the flat mean of the
             crop, or by a same-sized patch copied from another, non-overlapping place of the
             same crop.
    small    1-3 round spots, diameter uniform 3-6 px, each x +- c*255, c uniform 0.3-0.5.
  Files: OUT/train/good/NNN.png, OUT/test/good/NNN.png, OUT/test/<defect>/NNN.png,
    OUT/ground_truth/<defect>/NNN_mask.png (8-bit grayscale PNG, NNN from 000).

`baselines` reads OUT/train/good and OUT/test/* as grayscale, resizes to --size (PIL bilinear),
scales to [0, 1], and prints one JSON line of image AUROCs (sklearn roc_auc_score, label 0 for
test/good, 1 for any defect; per_defect compares test/good with one defect class):
  pca16  mean squared PCA reconstruction error, 16 components fitted on train
  pca90  same with the fewest components explaining 90% of train variance
  nn1    Euclidean distance to the nearest training image in pixel space
Component counts are capped at (number of train images - 1); they are reported on stderr.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation
from skimage import data as skdata

TEXTURES = ["brick", "grass", "gravel"]
DEFECTS = ["scratch", "stain", "missing", "small"]


def load_photo(name, size):
    img = getattr(skdata, name)()
    h, w = img.shape
    split = int(0.6 * w)
    f = max(1, math.ceil(max(size / (w - split), size / h)))
    if f > 1:
        img = np.asarray(Image.fromarray(img).resize((w * f, h * f), Image.BICUBIC))
    return img.astype(np.float64), int(0.6 * img.shape[1])


def good_crop(rng, photo, split, size, test):
    h, w = photo.shape
    lo, hi = (split, w - size) if test else (0, split - size)
    y, x = rng.integers(0, h - size + 1), rng.integers(lo, hi + 1)
    crop = photo[y:y + size, x:x + size]
    m = crop.mean()
    crop = (crop - m) * rng.uniform(0.95, 1.05) + m * rng.uniform(0.95, 1.05)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(np.rot90(crop, rng.integers(0, 4)), 0, 255).copy()


def sign(rng):
    return 1.0 if rng.random() < 0.5 else -1.0


def scratch(rng, img):
    s = img.shape[0]
    n = int(rng.uniform(30, 150) / 0.5)
    p = rng.uniform(0.15 * s, 0.85 * s, 2)
    th, kappa = rng.uniform(0, 2 * np.pi), rng.uniform(-0.03, 0.03)
    pts = []
    for _ in range(n):
        pts.append(p.copy())
        p += 0.5 * np.array([np.sin(th), np.cos(th)])
        th += 0.5 * kappa + rng.normal(0, 0.01)
    pts = np.clip(np.round(pts).astype(int), 0, s - 1)
    mask = np.zeros(img.shape, bool)
    mask[pts[:, 0], pts[:, 1]] = True
    width = rng.integers(1, 4)
    if width == 2:
        mask = binary_dilation(mask, np.ones((2, 2), bool))
    elif width == 3:
        mask = binary_dilation(mask)  # 3x3 cross
    img[mask] += sign(rng) * rng.uniform(0.3, 0.6) * 255
    return mask


def stain(rng, img):
    s = img.shape[0]
    a, b = rng.uniform(10, 40, 2)
    cy, cx = rng.uniform(max(a, b), s - max(a, b), 2)
    ang = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:s, 0:s]
    dy, dx = yy - cy, xx - cx
    u, v = dx * np.cos(ang) + dy * np.sin(ang), -dx * np.sin(ang) + dy * np.cos(ang)
    phi = np.arctan2(v, u)
    wob = 1 + sum(rng.uniform(-0.1, 0.1) * np.sin(k * phi + rng.uniform(0, 2 * np.pi))
                  for k in (2, 3))
    r = np.hypot(u / a, v / b) / wob  # 1 on the (wobbled) ellipse edge
    w = 1 / (1 + np.exp(np.clip((r - 1) * min(a, b) / 0.75, -50, 50)))  # ~3 px soft edge
    img *= 1 + sign(rng) * rng.uniform(0.15, 0.35) * w
    return w > 0.5


def missing(rng, img):
    s = img.shape[0]
    h, w = rng.integers(12, 51, 2)
    y, x = rng.integers(0, s - h + 1), rng.integers(0, s - w + 1)
    if rng.random() < 0.5:
        img[y:y + h, x:x + w] = img.mean()
    else:
        while True:  # source rectangle that does not overlap the target
            sy, sx = rng.integers(0, s - h + 1), rng.integers(0, s - w + 1)
            if abs(sy - y) >= h or abs(sx - x) >= w:
                break
        img[y:y + h, x:x + w] = img[sy:sy + h, sx:sx + w].copy()
    mask = np.zeros(img.shape, bool)
    mask[y:y + h, x:x + w] = True
    return mask


def small(rng, img):
    s = img.shape[0]
    yy, xx = np.mgrid[0:s, 0:s]
    mask = np.zeros(img.shape, bool)
    for _ in range(rng.integers(1, 4)):
        d = rng.uniform(3, 6)
        cy, cx = rng.uniform(d, s - d, 2)
        spot = (yy + 0.5 - cy) ** 2 + (xx + 0.5 - cx) ** 2 <= (d / 2) ** 2
        img[spot] += sign(rng) * rng.uniform(0.3, 0.5) * 255
        mask |= spot
    return mask


def save(path, arr):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8)).save(path)


def make(args):
    rng = np.random.default_rng(args.seed)
    photo, split = load_photo(args.texture, args.size)
    out = args.out
    for i in range(args.train):
        save(f"{out}/train/good/{i:03d}.png", good_crop(rng, photo, split, args.size, False))
    for i in range(args.test_good):
        save(f"{out}/test/good/{i:03d}.png", good_crop(rng, photo, split, args.size, True))
    draw = {"scratch": scratch, "stain": stain, "missing": missing, "small": small}
    for d in DEFECTS:
        for i in range(args.test_defect):
            img = good_crop(rng, photo, split, args.size, True)
            mask = draw[d](rng, img)
            save(f"{out}/test/{d}/{i:03d}.png", img)
            save(f"{out}/ground_truth/{d}/{i:03d}_mask.png", mask * 255.0)
    print(f"{out}: {args.texture}, photo {photo.shape[1]}x{photo.shape[0]} (train cols < {split}),"
          f" {args.train} train, {args.test_good} good + {len(DEFECTS)}x{args.test_defect} defect"
          " test", file=sys.stderr)


def load_dir(path, size):
    files = sorted(f for f in os.listdir(path) if f.endswith(".png"))
    return np.stack([np.asarray(Image.open(os.path.join(path, f)).convert("L")
                                .resize((size, size), Image.BILINEAR), np.float64).ravel() / 255
                     for f in files])


def baselines(args):
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    train = load_dir(f"{args.out}/train/good", args.size)
    classes = sorted(os.listdir(f"{args.out}/test"))
    tests = {c: load_dir(f"{args.out}/test/{c}", args.size) for c in classes}
    cap = len(train) - 1
    full = PCA(n_components=min(cap, train.shape[1]), random_state=0).fit(train)
    k90 = min(cap, int(np.searchsorted(np.cumsum(full.explained_variance_ratio_), 0.90)) + 1)
    pcas = {"pca16": PCA(n_components=min(16, cap), random_state=0).fit(train),
            "pca90": PCA(n_components=k90, random_state=0).fit(train)}
    sq_train = (train ** 2).sum(1)

    def scores(x):
        s = {m: ((x - p.inverse_transform(p.transform(x))) ** 2).mean(1) for m, p in pcas.items()}
        d2 = (x ** 2).sum(1)[:, None] + sq_train[None, :] - 2 * x @ train.T
        s["nn1"] = np.sqrt(np.maximum(d2.min(1), 0))
        return s

    sc = {c: scores(x) for c, x in tests.items()}
    methods = ["pca16", "pca90", "nn1"]

    def auroc(m, defects):
        neg, pos = sc["good"][m], np.concatenate([sc[d][m] for d in defects])
        return round(float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))],
                                         np.r_[neg, pos])), 4)

    defects = [c for c in classes if c != "good"]
    res = {m: auroc(m, defects) for m in methods}
    res["per_defect"] = {d: {m: auroc(m, [d]) for m in methods} for d in defects}
    print(f"train {len(train)}, test {sum(map(len, tests.values()))}, size {args.size}, "
          f"pca16 k={pcas['pca16'].n_components_}, pca90 k={k90}", file=sys.stderr)
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="write the data set into OUT")
    mk.add_argument("out")
    mk.add_argument("--texture", choices=TEXTURES, default="brick",
                    help="skimage.data texture (bundled, no download): " + ", ".join(TEXTURES))
    mk.add_argument("--size", type=int, default=300, help="crop side in pixels")
    mk.add_argument("--train", type=int, default=350)
    mk.add_argument("--test-good", type=int, default=60)
    mk.add_argument("--test-defect", type=int, default=20, help="images per defect class")
    mk.add_argument("--seed", type=int, default=0)
    bl = sub.add_parser("baselines", help="score PCA and 1-NN baselines on OUT")
    bl.add_argument("out")
    bl.add_argument("--size", type=int, default=128, help="side the images are resized to")
    args = ap.parse_args()
    make(args) if args.cmd == "make" else baselines(args)


if __name__ == "__main__":
    main()
