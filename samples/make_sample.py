"""Draw samples/cat.png: a cartoon cat in the centre of a garden scene (drawn here, no licence questions).

A clear foreground object on a textured background, like the photos GenView is made for, so the README's
examples have an input. Deterministic:  python samples/make_sample.py  rewrites the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
OUT = Path(__file__).with_name("cat.png")


def background(rng: np.random.Generator) -> Image.Image:
    """Sky over grass, with a little noise so the background has texture."""
    y = np.linspace(0.0, 1.0, SIZE)[:, None, None]
    sky = np.array([150, 190, 235]) * (1 - 0.3 * y)
    grass = np.array([70, 140, 60]) * (0.8 + 0.4 * y)
    pixels = np.where(y < 0.55, sky, grass) * np.ones((1, SIZE, 1))
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def draw_cat(image: Image.Image) -> None:
    """An orange cat, sitting, facing the viewer."""
    d = ImageDraw.Draw(image)
    fur, dark, pink = (230, 140, 50), (120, 60, 20), (240, 150, 160)
    d.ellipse((78, 120, 178, 225), fill=fur, outline=dark, width=3)                 # body
    d.ellipse((88, 62, 168, 135), fill=fur, outline=dark, width=3)                  # head
    d.polygon([(92, 85), (100, 40), (122, 68)], fill=fur, outline=dark)            # ears
    d.polygon([(164, 85), (156, 40), (134, 68)], fill=fur, outline=dark)
    d.polygon([(100, 75), (104, 52), (116, 68)], fill=pink)
    d.polygon([(156, 75), (152, 52), (140, 68)], fill=pink)
    for x in (110, 146):                                                            # eyes
        d.ellipse((x - 8, 88, x + 8, 104), fill=(250, 240, 120), outline=dark, width=2)
        d.ellipse((x - 3, 90, x + 3, 102), fill=(20, 20, 20))
    d.polygon([(122, 110), (134, 110), (128, 117)], fill=pink)                     # nose
    for dy in (-4, 2, 8):                                                           # whiskers
        d.line((90, 112 + dy, 118, 114), fill=dark, width=1)
        d.line((166, 112 + dy, 138, 114), fill=dark, width=1)
    d.arc((170, 150, 225, 215), start=200, end=40, fill=dark, width=9)            # tail
    d.arc((170, 150, 225, 215), start=200, end=40, fill=fur, width=5)
    for x in (105, 151):                                                            # paws
        d.ellipse((x - 14, 210, x + 14, 230), fill=fur, outline=dark, width=2)


def make() -> Image.Image:
    image = background(np.random.default_rng(0))
    draw_cat(image)
    return image.filter(ImageFilter.SMOOTH)


if __name__ == "__main__":
    make().save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
