"""Before/after panels of the colour layer on real data from four labs (for eyes, not tests).

Run: `PYTHONPATH=src python scripts/stain_panels.py [--out /tmp/histoflow_panels]`.
Writes `normalisation.png` (rows: tiles from stills / CRC / PCam / BreakHis; columns:
original, Reinhard, Macenko, Macenko + CLAHE) and `augmentation.png` (one tile under
several seeded HED and HSV jitters), with the target image shown on top.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from histoflow.core.images import read_image
from histoflow.preprocess import HedJitter, HsvJitter, MacenkoNormalizer, ReinhardNormalizer
from histoflow.preprocess.clahe import clahe

DATA = Path(os.environ.get("HISTOFLOW_DATA", "/work/shared/data"))
CELL = 160


def _cell(img: np.ndarray, label: str = "") -> Image.Image:
    im = Image.fromarray(img).resize((CELL, CELL), Image.BILINEAR)
    if label:
        draw = ImageDraw.Draw(im)
        draw.rectangle((0, 0, CELL, 12), fill=(0, 0, 0))
        draw.text((2, 0), label[:26], fill=(255, 255, 255))
    return im


def _grid(rows: list[list[Image.Image]]) -> Image.Image:
    width = max(len(r) for r in rows) * CELL
    sheet = Image.new("RGB", (width, len(rows) * CELL), (255, 255, 255))
    for y, row in enumerate(rows):
        for x, cell in enumerate(row):
            sheet.paste(cell, (x * CELL, y * CELL))
    return sheet


def _sources() -> list[tuple[str, np.ndarray]]:
    def crop(img, px=256):
        h, w = img.shape[:2]
        y, x = max(0, (h - px) // 2), max(0, (w - px) // 2)
        return img[y : y + px, x : x + px]

    out = [
        ("stills/torchstain_source", crop(read_image(DATA / "stills/torchstain_source.png"))),
        ("stills/stardist_histo", crop(read_image(DATA / "stills/stardist_histo.jpg"))),
    ]
    for name in ("TUM-AACHEHDV", "LYM-AATTSRNN", "BACK-AAQSHYMA", "ADI-AAQEFMRI"):
        out.append((f"crc/{name[:3]}", read_image(DATA / f"crc/{name}.tif")))
    for label in ("0", "1"):
        f = sorted((DATA / f"pcam/train/{label}").glob("*.jpg"))[3]
        out.append((f"pcam/{label}/{f.stem}", read_image(f)))
    for label in ("benign", "malignant"):
        f = sorted((DATA / f"breakhis/{label}").glob("*.png"))[0]
        out.append((f"breakhis/{label}", read_image(f)))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/histoflow_panels"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    target = read_image(DATA / "stills/torchstain_target.png")
    reinhard = ReinhardNormalizer().fit(target)
    macenko = MacenkoNormalizer().fit(target)
    rows = [[_cell(target, "TARGET torchstain_target")]]
    for name, img in _sources():
        before = macenko.fallbacks
        m = macenko.transform(img)
        tag = " (fallback)" if macenko.fallbacks > before else ""
        rows.append(
            [
                _cell(img, name),
                _cell(reinhard.transform(img), "reinhard"),
                _cell(m, "macenko" + tag),
                _cell(clahe(m, 2.0, 8, "lab"), "macenko+clahe lab"),
                _cell(clahe(img, 2.0, 8, "rgb"), "clahe rgb (original)"),
            ]
        )
    _grid(rows).save(args.out / "normalisation.png")

    rows = []
    for name, img in [s for s in _sources() if s[0].startswith(("pcam/1", "crc/TUM", "breakhis/m"))]:
        chw = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()
        row = [_cell(img, name)]
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            row.append(_cell(HedJitter(0.05, 0.05, generator=g)(chw).permute(1, 2, 0).numpy(), f"hed 0.05 s{seed}"))
        for seed in range(2):
            g = torch.Generator().manual_seed(seed)
            row.append(_cell(HedJitter(0.2, 0.2, generator=g)(chw).permute(1, 2, 0).numpy(), f"hed 0.2 s{seed}"))
        for seed in range(2):
            g = torch.Generator().manual_seed(seed)
            row.append(_cell(HsvJitter(0.05, 0.2, 0.1, generator=g)(chw).permute(1, 2, 0).numpy(), f"hsv s{seed}"))
        rows.append(row)
    _grid(rows).save(args.out / "augmentation.png")
    print(f"panels in {args.out} (Macenko fallbacks: {macenko.fallbacks})")


if __name__ == "__main__":
    main()
