"""AUPRO of `bottleneck eval` against an independent implementation of MVTec AD's
definition (its evaluation code's algorithm: 8-connected regions by scipy.ndimage.label,
per-pixel FPR and PRO weights accumulated over the sorted scores, ties together, trapezoids
cut at FPR 0.3 by interpolation, divided by 0.3), on the maps `bottleneck score --maps`
writes at each image's size. Usage (bench/.venv):
  python bench/aupro_check.py --bin target/release/bottleneck --model M --root MVTEC_ROOT"""

import argparse
import json
import os
import subprocess
import tempfile

import numpy as np
from PIL import Image
from scipy.ndimage import label


def aupro(maps, masks, max_fpr=0.3):
    scores, fpr_w, pro_w, regions = [], [], [], 0
    normal = sum(int((m == 0).sum()) for m in masks)
    for amap, mask in zip(maps, masks):
        lab, n = label(mask, structure=np.ones((3, 3)))
        pro = np.zeros(mask.shape)
        for r in range(1, n + 1):
            pro[lab == r] = 1.0 / (lab == r).sum()
        regions += n
        scores.append(amap.ravel())
        fpr_w.append((mask == 0).ravel() / normal)
        pro_w.append(pro.ravel())
    s, f, p = (np.concatenate(v) for v in (scores, fpr_w, pro_w))
    order = np.argsort(-s, kind="stable")
    s, f, p = s[order], np.cumsum(f[order]), np.cumsum(p[order]) / regions
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each run of equal scores
    fprs, pros = np.r_[0.0, f[last]], np.r_[0.0, p[last]]
    keep = fprs <= max_fpr
    i = keep.sum()  # first point beyond max_fpr
    x, y = list(fprs[:i]), list(pros[:i])
    if i < len(fprs):
        t = (max_fpr - fprs[i - 1]) / (fprs[i] - fprs[i - 1])
        x.append(max_fpr)
        y.append(pros[i - 1] + t * (pros[i] - pros[i - 1]))
    return np.trapezoid(y, x) / max_fpr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--root", required=True)
    a = ap.parse_args()
    ev = json.loads(subprocess.run([a.bin, "--quiet", "eval", a.model, a.root], check=True,
                                   capture_output=True, text=True).stdout)
    test = os.path.join(a.root, "test")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([a.bin, "--quiet", "score", a.model, test, "-o", os.path.join(tmp, "s.csv"),
                        "--maps", tmp], check=True)
        maps, masks = [], []
        for category in sorted(os.listdir(test)):
            for name in sorted(os.listdir(os.path.join(test, category))):
                stem = os.path.splitext(name)[0]
                amap = np.load(os.path.join(tmp, category, f"{stem}_map.npy"))
                mask_path = os.path.join(a.root, "ground_truth", category, f"{stem}_mask.png")
                if category == "good":
                    mask = np.zeros(amap.shape, bool)
                else:
                    mask = np.asarray(Image.open(mask_path).convert("L")) >= 128
                maps.append(amap)
                masks.append(mask)
    ref = aupro(maps, masks)
    print(json.dumps(dict(bottleneck_eval=ev["aupro"], reference=ref, difference=abs(ev["aupro"] - ref))))


if __name__ == "__main__":
    main()
