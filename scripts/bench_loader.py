#!/usr/bin/env python3
"""Decoded batches per second: maxl's streaming loader (crates/maxl-data/examples/bench_loader.rs)
against torchvision's ImageFolder + DataLoader, on the same folder of JPEGs, in one run.

Both produce normalised float batches of 64 images, 3x224x224, from 256x256 JPEGs by the
evaluation transform (shorter side 256, central 224x224 crop, ImageNet mean/std) with 2 workers:
maxl a 2-thread pool decoding and assembling each batch, torchvision
`DataLoader(ImageFolder(..., Resize(256), CenterCrop(224), ToTensor(), Normalize(...)),
batch_size=64, num_workers=2, persistent_workers=True)`. Each side reads the folder once
untimed (page cache, worker start), then times the following epochs. Repeats alternate the two
and the report gives medians and maxl / torchvision.

    scripts/bench_loader.sh                       # builds the release example, then runs this
    python scripts/bench_loader.py --maxl target/release/examples/bench_loader --images 1024
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def make_images(root, n, classes=4, size=256):
    """n size x size JPEGs in `classes` folders: smooth random colour fields with noise, so that
    they compress like photos rather than like noise or flat colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = os.path.join(root, f"class{i % classes}")
        os.makedirs(d, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.int16)
        noise = rng.integers(-12, 13, (size, size, 3), dtype=np.int16)
        img = Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))
        img.save(os.path.join(d, f"{i}.jpg"), quality=90)


def torchvision_rate(root, workers, batch, epochs):
    import torch
    from torchvision import datasets, transforms

    t = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    loader = torch.utils.data.DataLoader(
        datasets.ImageFolder(root, t), batch_size=batch, num_workers=workers,
        persistent_workers=workers > 0)
    batches = images = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        if epoch == 1:
            batches = images = 0
            start = time.perf_counter()
        for x, _ in loader:
            batches += 1
            images += x.shape[0]
    s = time.perf_counter() - start
    return {"impl": "torchvision", "batches": batches, "images": images, "seconds": s,
            "batches_per_s": batches / s, "images_per_s": images / s}


def maxl_rate(binary, root, workers, batch, epochs):
    out = subprocess.run([binary, root, "--workers", str(workers), "--batch", str(batch),
                          "--epochs", str(epochs)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maxl", required=True, help="the built bench_loader example")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="per measurement, the first untimed")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dir", help="use (or fill, when empty) this folder instead of a temporary one")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = a.dir or tmp
        os.makedirs(root, exist_ok=True)
        if not os.listdir(root):
            make_images(root, a.images)
        rows = []
        for _ in range(a.repeats):
            rows.append(maxl_rate(a.maxl, root, a.workers, a.batch, a.epochs))
            rows.append(torchvision_rate(root, a.workers, a.batch, a.epochs))
    med = {name: statistics.median(r["batches_per_s"] for r in rows if r["impl"] == name)
           for name in ("maxl", "torchvision")}
    n = sum(1 for r in rows if r["impl"] == "maxl")
    print(f"{'loader':12s} {'batches/s':>10s} {'images/s':>10s}")
    for name, v in med.items():
        print(f"{name:12s} {v:10.2f} {v * a.batch:10.1f}")
    print(f"maxl / torchvision: {med['maxl'] / med['torchvision']:.2f}x "
          f"({a.workers} workers, batch {a.batch}, 256x256 JPEG -> 224x224, medians of {n})")


if __name__ == "__main__":
    sys.exit(main())
