#!/usr/bin/env python3
"""Builds the benchmark inputs from scikit-image's sample photographs.

    make_inputs.py OUTDIR

OUTDIR/bench.png: a 1024x1024 RGB mosaic of four real photographs
(astronaut, ihc, a 512x512 crop of hubble_deep_field, a crop of
motorcycle_left), saved as a plain PNG: about 1.9 MB, the size of a
typical generated PNG. OUTDIR/photos/: the photographs used for the
storage comparison, copied byte for byte from skimage/data.
"""
import os
import shutil
import sys

import skimage
from PIL import Image

PHOTOS = [
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "ihc.png",
    "hubble_deep_field.jpg",
    "rocket.jpg",
    "retina.jpg",
]


def main():
    out = sys.argv[1]
    data = os.path.join(os.path.dirname(skimage.__file__), "data")
    os.makedirs(os.path.join(out, "photos"), exist_ok=True)

    def load(name):
        return Image.open(os.path.join(data, name)).convert("RGB")

    tiles = [
        load("astronaut.png"),
        load("ihc.png"),
        load("hubble_deep_field.jpg").crop((200, 200, 712, 712)),
        load("motorcycle_left.png").crop((100, 0, 612, 500)).resize((512, 512), Image.LANCZOS),
    ]
    mosaic = Image.new("RGB", (1024, 1024))
    for i, t in enumerate(tiles):
        mosaic.paste(t, ((i % 2) * 512, (i // 2) * 512))
    mosaic.save(os.path.join(out, "bench.png"), optimize=False)

    for name in PHOTOS:
        src = os.path.join(data, name)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(out, "photos", name))
    print("inputs:", os.path.join(out, "bench.png"), os.path.getsize(os.path.join(out, "bench.png")), "bytes")


if __name__ == "__main__":
    main()
