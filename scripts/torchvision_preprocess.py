#!/usr/bin/env python3
"""torchvision's evaluation preprocessing of image files, the reference maxl's preprocessing is
tested against (crates/maxl-preprocess/tests/torchvision.rs).

Each image is opened with Pillow, its EXIF orientation applied (ImageOps.exif_transpose),
converted to "RGB" (3 channels) or "L" (1), then, for each --shape C,H,W,RESIZE:

    RESIZE shorter-side-S:  Resize(S) -> CenterCrop((H, W)) -> PILToTensor
    RESIZE stretch:         Resize((H, W)) -> PILToTensor

(bilinear, antialiased: torchvision's defaults). The uint8 C x H x W tensors are written to OUT
as raw bytes (C * H * W bytes each, channel-first, row-major): for each shape in the order
given, each image in the order given.

    python scripts/torchvision_preprocess.py --shape 3,224,224,shorter-side-256 \
        --shape 1,28,28,stretch --out pixels.u8 a.jpg b.png
"""
import argparse

import torch
from PIL import Image, ImageOps
from torchvision import transforms


def transform(shape):
    """The transform of one --shape, and its (C, H, W)."""
    c, h, w, resize = shape.split(",")
    c, h, w = int(c), int(h), int(w)
    if c not in (1, 3):
        raise SystemExit(f"--shape {shape}: channels must be 1 or 3")
    if resize == "stretch":
        steps = [transforms.Resize((h, w))]
    elif resize.startswith("shorter-side-"):
        s = int(resize[len("shorter-side-"):])
        steps = [transforms.Resize(s), transforms.CenterCrop((h, w))]
    else:
        raise SystemExit(f"--shape {shape}: resize must be stretch or shorter-side-S")
    return transforms.Compose(steps + [transforms.PILToTensor()]), (c, h, w)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", action="append", required=True, help="C,H,W,RESIZE (repeatable)")
    p.add_argument("--out", required=True, help="file the raw uint8 CHW tensors are written to")
    p.add_argument("images", nargs="+")
    a = p.parse_args()
    with open(a.out, "wb") as out:
        for shape in a.shape:
            t, (c, h, w) = transform(shape)
            mode = "RGB" if c == 3 else "L"
            for path in a.images:
                with Image.open(path) as img:
                    x = t(ImageOps.exif_transpose(img).convert(mode))
                assert x.dtype == torch.uint8, x.dtype
                assert tuple(x.shape) == (c, h, w), (path, tuple(x.shape))
                out.write(x.contiguous().numpy().tobytes())


if __name__ == "__main__":
    main()
