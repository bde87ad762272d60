#!/usr/bin/env python3
"""The Python side of `maxl-label bench`: the obvious Python labelling pipeline, the baseline
maxl-label's images/s are a ratio to. For every image under INPUT/<class>/ (sorted):
Image.open → convert → resize(BILINEAR) (no draft), numpy / 255, batches of 64 through
onnxruntime-python (primary head, then the label generator for the folder's class), and the
same CSV columns maxl-label writes.

    python scripts/bench_label.py --input imgs/ --out labels.csv --model models --threads 2
"""
import argparse
import csv
import os

import numpy as np
import onnxruntime as ort
from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="folder of <class>/ folders")
    ap.add_argument("--out", required=True, help="CSV to write")
    ap.add_argument("--model", required=True, help="exported model directory")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime intra-op threads")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    primary = ort.InferenceSession(os.path.join(a.model, "primary.onnx"), opts, providers=["CPUExecutionProvider"])
    generator = ort.InferenceSession(
        os.path.join(a.model, "label_generator.onnx"), opts, providers=["CPUExecutionProvider"]
    )
    _, c, h, w = primary.get_inputs()[0].shape
    mode = "L" if c == 1 else "RGB"
    # Class names and ψ from the manifest (block lists of scalars and of `- name:` maps).
    names, psi, section = [], [], None
    with open(os.path.join(a.model, "maxl.yaml")) as f:
        for line in f:
            if not line.startswith((" ", "-")):
                section = line.split(":", 1)[0]
            elif section == "classes" and line.startswith("- name:"):
                names.append(line.split(":", 1)[1].strip().strip("'\""))
            elif section == "psi" and line.startswith("- "):
                psi.append(int(line[2:]))
    first_slot = [sum(psi[:k]) for k in range(len(psi))]
    index = {n: i for i, n in enumerate(names)}

    items = []
    for cls in sorted(os.listdir(a.input)):
        d = os.path.join(a.input, cls)
        if os.path.isdir(d) and cls in index:
            for f in sorted(os.listdir(d)):
                if f.lower().endswith((".png", ".jpg", ".jpeg")):
                    items.append((f"{cls}/{f}", os.path.join(d, f), index[cls]))
    items.sort()

    with open(a.out, "w", newline="") as out:
        wr = csv.writer(out, lineterminator="\n")
        wr.writerow(["path", "class", "class_source", "class_probability", "aux_slot", "aux_label", "aux_probability"])
        for s in range(0, len(items), a.batch_size):
            batch = items[s : s + a.batch_size]
            pixels = [
                np.asarray(Image.open(p).convert(mode).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
                for _, p, _ in batch
            ]
            x = np.stack([px.reshape(h, w, c).transpose(2, 0, 1) for px in pixels])
            labels = np.array([k for _, _, k in batch], dtype=np.int64)
            probs = primary.run(["primary_probs"], {"image": x})[0]
            aux_probs, aux_slot = generator.run(["aux_label_probs", "aux_slot"], {"image": x, "primary_label": labels})
            for i, (rel, _, k) in enumerate(batch):
                slot = int(aux_slot[i])
                wr.writerow(
                    [rel, names[k], "folder", f"{probs[i, k]:.6f}", slot,
                     f"{names[k]}.{slot - first_slot[k]}", f"{aux_probs[i, slot]:.6f}"]
                )

if __name__ == "__main__":
    main()
