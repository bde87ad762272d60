#!/usr/bin/env python3
"""Writes the conformance fixtures for maxl's real backbones: torchvision's ResNets with random
(seeded) weights, and the features torchvision computes from them, for the Rust port to match.

For each model, <model>.state.safetensors holds its full `state_dict()` under torchvision's own
names (float32; `num_batches_tracked` int64; `fc.*` included). Every BatchNorm's weight, bias,
running_mean and running_var is redrawn first, so that eval-mode normalisation is actually tested
(a fresh torchvision BN is the identity). For each case, <case>.io.safetensors holds
  input     float32 [2, 3, H, W]  uniform images already normalised with the ImageNet mean/std
  features  float32 [2, C]        eval-mode output with `fc` replaced by Identity: the flattened
                                  global-average-pooled backbone features (C = 512 or 2048)
and manifest.json lists the cases: {case: {state, io, arch, height, width}}.

  resnet18_224, resnet18_96x100     torchvision resnet18 (96x100: H = 96, W = 100)
  resnet50_224, resnet50_96x100     torchvision resnet50
  resnet18cifar_32                  resnet18, conv1 = 3x3 stride 1 (no bias), maxpool = Identity

    scripts/torchvision_fixtures.py OUT_DIR

Run with the project venv's Python (scripts/setup.sh installs torch, torchvision and safetensors
there). No weights are downloaded: `weights=None` everywhere.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

try:
    import torchvision
except ImportError:
    sys.exit("torchvision_fixtures: torchvision is not installed in this Python "
             f"({sys.executable}); run scripts/setup.sh and use $MAXL_PYTHON")

N = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resnet18_cifar():
    m = torchvision.models.resnet18(weights=None)
    m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = torch.nn.Identity()
    return m


# model name -> (arch in the manifest, constructor, seed); cases: (case, model, height, width, seed)
MODELS = {
    "resnet18": ("resnet18", lambda: torchvision.models.resnet18(weights=None), 18),
    "resnet50": ("resnet50", lambda: torchvision.models.resnet50(weights=None), 50),
    "resnet18cifar": ("resnet18-cifar", resnet18_cifar, 1832),
}
CASES = [
    ("resnet18_224", "resnet18", 224, 224, 1),
    ("resnet18_96x100", "resnet18", 96, 100, 2),
    ("resnet50_224", "resnet50", 224, 224, 3),
    ("resnet50_96x100", "resnet50", 96, 100, 4),
    ("resnet18cifar_32", "resnet18cifar", 32, 32, 5),
]


def build_model(ctor, seed):
    """The model in eval mode, float32, its BatchNorm parameters and statistics redrawn."""
    torch.manual_seed(seed)
    model = ctor().float().eval()
    g = torch.Generator().manual_seed(seed + 10_000)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                c = mod.num_features
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model


def make_input(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(N, 3, h, w, generator=g)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((img - mean) / std).contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the fixtures to (created if missing)")
    out = ap.parse_args().out_dir
    os.makedirs(out, exist_ok=True)

    def write(tensors, name):
        path = os.path.join(out, name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, path)
        print("wrote", path)

    manifest = {}
    for model_name, (arch, ctor, seed) in MODELS.items():
        model = build_model(ctor, seed)
        state_file = f"{model_name}.state.safetensors"
        write(model.state_dict(), state_file)
        model.fc = torch.nn.Identity()
        for case, m, h, w, in_seed in CASES:
            if m != model_name:
                continue
            x = make_input(h, w, in_seed)
            with torch.no_grad():
                features = model(x)
            io_file = f"{case}.io.safetensors"
            write({"input": x, "features": features}, io_file)
            manifest[case] = {"state": state_file, "io": io_file, "arch": arch, "height": h, "width": w}

    path = os.path.join(out, "manifest.json")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
