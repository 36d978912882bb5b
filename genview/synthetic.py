"""A seeded, procedurally drawn image set that can tell learning from initialisation (no download).

Ten shape classes, each drawn with a random colour (and, at random, a stripe texture), scale, rotation (±45°)
and position on a random two-colour gradient background with mild clutter (lines, small blobs) and sometimes a
small occluder in front of the object; the object's brightness differs from the background's (contrast ≥ 0.3). Every image comes with its foreground mask (the object's visible
pixels). Colours, position and background vary independently of the class, so neither raw pixels nor a
random network's features find the class (kNN ≤ 0.40), while the shape decides it (a supervised network
learns it). Every image is a function of (seed, split, index) alone.

    genview make-synthetic --out data/shapes --train 2000 --val 500 --size 32
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disk", "ring", "crescent", "triangle", "square", "star", "cross", "ell", "tee", "arrow")
SUPERSAMPLE = 4  # shapes are drawn at 4× and box-filtered down (anti-aliased edges)
SPLITS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class SyntheticSpec:
    """The knobs of the image set (the defaults are the calibrated ones, see README "Benchmarks")."""

    size: int = 32
    object_scale: tuple[float, float] = (0.32, 0.45)  # object radius as a fraction of the side
    clutter: tuple[int, int] = (0, 2)  # background lines/blobs per image (inclusive range)
    occluder_p: float = 0.2  # probability of one small occluder in front of the object
    texture_p: float = 0.3  # probability of a stripe texture on the object
    saturation: float = 1.0  # colours: uniform hue, saturation up to this, value in [0.15, 1]
    gradient: bool = True  # background: a two-colour gradient (else one colour)
    rotation: float = 45.0  # the object turns by a uniform angle in ±this many degrees
    contrast: float = 0.3  # the object's value (HSV) differs from the background's mean by at least this


@dataclass
class SyntheticSet:
    """Images uint8 [N, 3, S, S], labels int64 [N], foreground masks bool [N, S, S]."""

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def _regular(n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [(math.cos(phase + 2 * math.pi * k / n), math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _star() -> list[tuple[float, float]]:
    return [((1.0 if k % 2 == 0 else 0.42) * math.cos(math.pi * k / 5 - math.pi / 2),
             (1.0 if k % 2 == 0 else 0.42) * math.sin(math.pi * k / 5 - math.pi / 2)) for k in range(10)]


# Polygons in unit coordinates (radius ≈ 1); disk, ring and crescent are drawn from ellipses.
POLYGONS: dict[str, list[tuple[float, float]]] = {
    "triangle": _regular(3, -math.pi / 2),
    "square": [(x * 0.8, y * 0.8) for x, y in _regular(4, math.pi / 4)],
    "star": _star(),
    "cross": [(-0.3, -1), (0.3, -1), (0.3, -0.3), (1, -0.3), (1, 0.3), (0.3, 0.3), (0.3, 1), (-0.3, 1),
              (-0.3, 0.3), (-1, 0.3), (-1, -0.3), (-0.3, -0.3)],
    "ell": [(-0.7, -1), (-0.1, -1), (-0.1, 0.4), (0.8, 0.4), (0.8, 1), (-0.7, 1)],
    "tee": [(-1, -0.9), (1, -0.9), (1, -0.3), (0.3, -0.3), (0.3, 1), (-0.3, 1), (-0.3, -0.3), (-1, -0.3)],
    "arrow": [(-1, -0.25), (0.1, -0.25), (0.1, -0.75), (1, 0), (0.1, 0.75), (0.1, 0.25), (-1, 0.25)],
}


def _shape_mask(name: str, big: int, cx: float, cy: float, r: float, angle: float) -> Image.Image:
    """An 'L' mask of side `big` with the shape (centre, radius, rotation in the supersampled frame)."""
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    if name in POLYGONS:
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in POLYGONS[name]], fill=255)
        return mask
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    if name == "ring":
        draw.ellipse((cx - 0.55 * r, cy - 0.55 * r, cx + 0.55 * r, cy + 0.55 * r), fill=0)
    elif name == "crescent":
        ox, oy = cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle)
        draw.ellipse((ox - 0.85 * r, oy - 0.85 * r, ox + 0.85 * r, oy + 0.85 * r), fill=0)
    return mask


def _clutter_mask(rng: np.random.Generator, big: int) -> Image.Image:
    """A thin line or a small blob anywhere in the image."""
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    x, y = rng.uniform(0, big, 2)
    if rng.random() < 0.5:
        length, angle = rng.uniform(0.3, 0.7) * big, rng.uniform(0, math.pi)
        draw.line((x, y, x + length * math.cos(angle), y + length * math.sin(angle)), fill=255,
                  width=max(1, round(rng.uniform(0.03, 0.06) * big)))
    else:
        rx, ry = rng.uniform(0.05, 0.12, 2) * big
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=255)
    return mask


def _alpha(mask: Image.Image, size: int) -> np.ndarray:
    """Coverage in [0, 1] at the output size, [S, S, 1]."""
    return (np.asarray(mask.resize((size, size), Image.Resampling.BOX), dtype=np.float32) / 255.0)[..., None]


def _colour(rng: np.random.Generator, spec: SyntheticSpec, away_from: np.ndarray | None = None) -> np.ndarray:
    """A random RGB colour in [0, 1] (float32): uniform hue, saturation ≤ spec.saturation, value in [0.15, 1]
    and, given `away_from`, at least spec.contrast from that colour's value."""
    h, s, v = rng.random(), rng.uniform(0, spec.saturation), rng.uniform(0.15, 1.0)
    while away_from is not None and abs(v - float(away_from.max())) < spec.contrast:
        v = rng.uniform(0.15, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6) % 6
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def _background(rng: np.random.Generator, size: int, spec: SyntheticSpec) -> np.ndarray:
    """A linear gradient between two random colours in a random direction, [S, S, 3] in [0, 1]."""
    a = _colour(rng, spec)
    b = _colour(rng, spec) if spec.gradient else a
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (xx * math.cos(angle) + yy * math.sin(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return (a * (1 - t[..., None]) + b * t[..., None]).astype(np.float32)


def _foreground(rng: np.random.Generator, size: int, spec: SyntheticSpec, background: np.ndarray) -> np.ndarray:
    """The object's paint: one random colour, or stripes of two at a random angle and period (value away from
    the background's mean colour)."""
    colour = np.broadcast_to(_colour(rng, spec, background), (size, size, 3))
    if rng.random() >= spec.texture_p:
        return colour
    angle, period = rng.uniform(0, math.pi), rng.uniform(3, 7) * size / 32
    yy, xx = np.mgrid[0:size, 0:size]
    stripes = (np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period) > 0)[..., None]
    return np.where(stripes, colour, _colour(rng, spec, background))


def draw_image(seed: int, split: str, index: int, spec: SyntheticSpec = SyntheticSpec()) -> tuple[np.ndarray, int,
                                                                                                      np.ndarray]:
    """One image (uint8 [S, S, 3]), its class and its foreground mask (bool [S, S]), from (seed, split, index)."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    size, big = spec.size, spec.size * SUPERSAMPLE
    label = int(rng.integers(len(CLASSES)))
    img = _background(rng, size, spec)
    background = img.mean(axis=(0, 1))
    for _ in range(int(rng.integers(spec.clutter[0], spec.clutter[1] + 1))):
        a = _alpha(_clutter_mask(rng, big), size)
        img = img * (1 - a) + _colour(rng, spec) * a
    r = rng.uniform(*spec.object_scale) * big
    cx, cy = rng.uniform(r, big - r, 2)
    fg = _alpha(_shape_mask(CLASSES[label], big, cx, cy, r, math.radians(rng.uniform(-1, 1) * spec.rotation)), size)
    img = img * (1 - fg) + _foreground(rng, size, spec, background) * fg
    if rng.random() < spec.occluder_p:
        occ = Image.new("L", (big, big), 0)
        ox, oy = rng.uniform(cx - r, cx + r), rng.uniform(cy - r, cy + r)
        side = rng.uniform(0.25, 0.45) * r
        ImageDraw.Draw(occ).rectangle((ox - side, oy - side, ox + side, oy + side), fill=255)
        a = _alpha(occ, size)
        img = img * (1 - a) + _colour(rng, spec) * a
        fg = fg * (1 - a)
    return (img * 255).round().clip(0, 255).astype(np.uint8), label, fg[..., 0] >= 0.5


def make_split(seed: int, split: str, count: int, spec: SyntheticSpec = SyntheticSpec()) -> SyntheticSet:
    """`count` images of a split in memory."""
    drawn = [draw_image(seed, split, i, spec) for i in range(count)]
    return SyntheticSet(images=np.stack([d[0] for d in drawn]).transpose(0, 3, 1, 2).copy(),
                        labels=np.array([d[1] for d in drawn], dtype=np.int64),
                        masks=np.stack([d[2] for d in drawn]))


def write_image_folder(out: Path, seed: int, counts: dict[str, int], spec: SyntheticSpec = SyntheticSpec()) -> int:
    """OUT/<split>/<class>/<i>.png (ImageFolder) and OUT/masks/<split>/<class>/<i>.png; the images written."""
    written = 0
    for split, count in counts.items():
        for i in range(count):
            img, label, mask = draw_image(seed, split, i, spec)
            for root, pixels in ((out / split, img), (out / "masks" / split, mask.astype(np.uint8) * 255)):
                folder = root / CLASSES[label]
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{i:06d}.png")
            written += 1
    return written
