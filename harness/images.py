"""Small random test images: PNG bytes and class folders of PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(width: int = 96, height: int = 80, seed: int = 0) -> bytes:
    """A random RGB PNG."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, classes: int = 2, per_class: int = 8, seed: int = 0, width: int = 48,
                 height: int = 40) -> Path:
    """`root/class{c}/{i}.png`: distinct random PNGs in class folders (the trainer's kNN labels); returns root."""
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            (root / f"class{c}" / f"{i}.png").write_bytes(png_bytes(width, height, seed=seed + per_class * c + i))
    return root
