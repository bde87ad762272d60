#!/usr/bin/env python3
"""Writes the image fixtures the tests read that Rust's encoders cannot produce:
tests/fixtures/cmyk.jpg, an Adobe CMYK JPEG (as print workflows save them) written by Pillow.

    python scripts/make_image_fixtures.py
"""
import os

from PIL import Image

out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
os.makedirs(out, exist_ok=True)
img = Image.new("CMYK", (40, 30))
img.putdata([(x * 6, y * 8, 100, 30) for y in range(30) for x in range(40)])
img.save(os.path.join(out, "cmyk.jpg"), quality=90)
print("wrote", os.path.join(out, "cmyk.jpg"))
