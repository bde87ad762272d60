#!/usr/bin/env python3
"""Converts a torchvision checkpoint (.pth) to a safetensors file that maxl's backbones load,
keeping torchvision's tensor names (conv1.weight, layer1.0.bn1.running_var, fc.bias, ...).

The input may be a state dict, a checkpoint dict holding one under `state_dict` or `model`, or a
whole pickled nn.Module (torch.save(model)); a leading `module.` left by DataParallel/DDP is
stripped. Floating tensors are written as contiguous float32; `num_batches_tracked` and other
integer tensors keep their dtype (int64).

    scripts/convert_torchvision.py resnet50.pth resnet50.safetensors

The file is read with torch.load(weights_only=True). Only a file that cannot be read that way (a
whole pickled module, or a checkpoint holding other Python objects) is read again with
weights_only=False, after a warning: that runs code from the file, so do it only for files you
trust. Run with the project venv's Python (scripts/setup.sh installs torch, torchvision and
safetensors there).
"""
import argparse
import os
import pickle
import sys
import zipfile

import torch
from safetensors.torch import save_file

PROG = os.path.basename(sys.argv[0]) or "convert_torchvision.py"
# Checkpoint dict keys a state dict is commonly kept under, most specific first.
NESTED_KEYS = ("state_dict", "model", "model_state_dict")
# BatchNorm buffers: counted apart from the parameters in the summary.
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
# The pickled magic number that opens a legacy (pre-zip) torch.save file, after the protocol bytes.
LEGACY_MAGIC = bytes.fromhex("8a0a6cfc9c46f9206aa85019")


class ConvertError(Exception):
    """A one-line reason the input cannot be converted."""


def first_line(e):
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def torch_format(path):
    """'zip', 'torchscript' or 'legacy' for a file torch.save / torch.jit.save wrote, else None."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "zip"
        return None
    with open(path, "rb") as f:
        head = f.read(2 + len(LEGACY_MAGIC))
    return "legacy" if head[:1] == b"\x80" and head[2:] == LEGACY_MAGIC else None


def load(path):
    """The object stored in `path`, read as safely as its contents allow."""
    if not os.path.exists(path):
        raise ConvertError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ConvertError(f"{path}: is a directory, not a .pth file")
    fmt = torch_format(path)
    if fmt is None:
        raise ConvertError(f"{path}: not a PyTorch file (neither a torch.save zip archive, maybe truncated, nor a legacy pickle)")
    try:
        if fmt == "torchscript":
            return torch.jit.load(path, map_location="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not str(e).startswith("Weights only load failed"):
            raise ConvertError(f"{path}: cannot read: {first_line(e)}") from e
    except Exception as e:  # a truncated or corrupt archive
        raise ConvertError(f"{path}: cannot read: {first_line(e)}") from e

    print(f"warning: {path} holds Python objects besides tensors (e.g. a whole pickled nn.Module); "
          "loading it with weights_only=False, which runs code from the file: only do this for "
          "files you trust", file=sys.stderr)
    try:
        import torchvision  # noqa: F401  (a pickled torchvision model names its classes)
    except ImportError:
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConvertError(f"{path}: cannot read: {first_line(e)}") from e


def state_dict_of(obj, path):
    """The name -> tensor mapping inside whatever `load` returned, `module.` prefixes stripped."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in NESTED_KEYS:
            if key in obj and isinstance(obj[key], (dict, torch.nn.Module)):
                return state_dict_of(obj[key], path)
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, not a state dict or model")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:8])) or "none"
        raise ConvertError(f"{path}: no tensors found (top-level keys: {keys})")
    out = {}
    for name, t in tensors.items():
        short = name[len("module."):] if name.startswith("module.") else name
        if short in out:
            raise ConvertError(f"{path}: both {short} and module.{short} present")
        out[short] = t
    return out


def normalise(t):
    """A fresh contiguous copy (safetensors refuses tensors that share memory): float32 if floating."""
    t = t.detach()
    dtype = torch.float32 if t.is_floating_point() else t.dtype
    return torch.empty(t.shape, dtype=dtype).copy_(t)


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", metavar="IN.pth",
                    help="torchvision checkpoint: a state dict, a dict holding one under "
                         "'state_dict' or 'model', or a whole pickled nn.Module")
    ap.add_argument("output", metavar="OUT.safetensors",
                    help="safetensors file to write (same tensor names; overwritten if present)")
    args = ap.parse_args()
    try:
        state = state_dict_of(load(args.input), args.input)
        tensors = {k: normalise(v) for k, v in state.items()}
        try:
            save_file(tensors, args.output)
        except Exception as e:
            raise ConvertError(f"{args.output}: cannot write: {first_line(e)}") from e
    except ConvertError as e:
        sys.exit(f"{PROG}: error: {e}")

    params = sum(t.numel() for k, t in tensors.items() if not k.endswith(BUFFER_SUFFIXES))
    buffers = sum(t.numel() for k, t in tensors.items() if k.endswith(BUFFER_SUFFIXES))
    print(f"wrote {args.output}: {len(tensors)} tensors, {params:,} parameters "
          f"(+ {buffers:,} BatchNorm buffer values)")


if __name__ == "__main__":
    main()
