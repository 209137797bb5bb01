#!/usr/bin/env python3
"""IMAGE_STORE_FORMAT=webp|avif at quality 90 on real photographs.

    storage.py BENCH_BINARY PHOTOS_DIR OUT_DIR

For each photograph, runs `variant_bench store` (the real
convert_for_store) for webp and avif at quality 90, then decodes the
result with Pillow and compares it with the original's pixels: SSIM
(skimage.metrics.structural_similarity, RGB, data_range 255) and PSNR.
Both sides are first converted to sRGB through their own embedded ICC
profile (Pillow's LittleCMS): the WebP keeps the original's profile,
while the AVIF carries sRGB pixels (ravif cannot embed ICC), so raw
values of a non-sRGB original (rocket.jpg is Adobe RGB) differ on
purpose.
Prints a markdown table. convert_for_store keeps the original when the
transcoded file would not be smaller; such rows say "kept".
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image, ImageCms
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

BIN, PHOTOS, OUT = sys.argv[1:4]
os.makedirs(OUT, exist_ok=True)


SRGB = ImageCms.createProfile("sRGB")


def pixels(path_or_bytes):
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    img = Image.open(src)
    icc = img.info.get("icc_profile")
    img = img.convert("RGB")
    if icc:
        img = ImageCms.profileToProfile(img, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB)
    return np.asarray(img)


rows = []
totals = {"orig": 0, "webp": 0, "avif": 0}
for name in sorted(os.listdir(PHOTOS)):
    src = os.path.join(PHOTOS, name)
    ref = pixels(src)
    orig = os.path.getsize(src)
    row = {"name": name, "size": f"{ref.shape[1]}x{ref.shape[0]}", "orig": orig}
    totals["orig"] += orig
    for fmt in ("webp", "avif"):
        dst = os.path.join(OUT, f"{os.path.splitext(name)[0]}.q90.{fmt}")
        res = json.loads(subprocess.check_output([BIN, "store", src, fmt, "90", dst]))
        data = open(dst, "rb").read()
        got = pixels(data)
        ssim = structural_similarity(ref, got, channel_axis=2, data_range=255)
        psnr = peak_signal_noise_ratio(ref, got, data_range=255)
        row[fmt] = {"bytes": len(data), "kept": res["format"] != fmt, "ssim": ssim,
                    "psnr": psnr, "ms": res["ms"]}
        totals[fmt] += len(data)
    rows.append(row)

print("| image | pixels | original | WebP q90 | SSIM | PSNR | AVIF q90 | SSIM | PSNR |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    cells = [r["name"], r["size"], f'{r["orig"] / 1024:.0f} KiB']
    for fmt in ("webp", "avif"):
        f = r[fmt]
        kept = " (kept)" if f["kept"] else ""
        cells += [f'{f["bytes"] / 1024:.0f} KiB ({100 * f["bytes"] / r["orig"]:.0f}%){kept}',
                  f'{f["ssim"]:.4f}', f'{f["psnr"]:.1f} dB']
    print("| " + " | ".join(cells) + " |")
o = totals["orig"]
print(f'| **total** | | {o / 1024:.0f} KiB | {totals["webp"] / 1024:.0f} KiB ({100 * totals["webp"] / o:.0f}%) | | '
      f'| {totals["avif"] / 1024:.0f} KiB ({100 * totals["avif"] / o:.0f}%) | | |')
