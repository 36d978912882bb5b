"""Pictures of training: what GenView chose and how it weighted it, per epoch.

`EpochPictures` collects, batch by batch, the noise levels of the generated views, the quality weights w
(Eq. 13), the fraction of samples trained on a generated view, and the last batch's highest- and lowest-weighted
pairs. `write(epoch, writer, folder)` sends them to a TensorBoard-like writer (histograms, a scalar, an image
grid: original crop | view crop | w, q, s_f, s_b) and draws the same as PNG files in `folder` for people
without TensorBoard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from genview.method.quality import PairQuality
from trainer.checkpoint import PICTURES

TILE, PANEL, MARGIN = 96, 150, 4  # pair grid: crop side, text panel width, gap (pixels)
LEVEL_RANGE = (0, 1000)  # embedding noise levels l (Eq. 8)
INK, PAPER, BAR = (20, 20, 20), (255, 255, 255), (70, 110, 180)


@dataclass(frozen=True)
class ShownPair:
    """One pair of the grid: its two crops (uint8 [H, W, 3]), weight, and scores when the run scores."""

    original: np.ndarray
    view: np.ndarray
    w: float
    generated: bool
    q: float | None = None
    s_f: float | None = None
    s_b: float | None = None

    def caption(self) -> list[str]:
        scores = [f"{name} {value:.3f}" for name, value in (("q", self.q), ("s_f", self.s_f), ("s_b", self.s_b))
                  if value is not None]
        return [f"w {self.w:.3f}", *scores, "generated view" if self.generated else "original (no view)"]


def _hwc(crop: torch.Tensor) -> np.ndarray:
    """A uint8 (or [0, 1] float) crop [3, H, W] → uint8 [H, W, 3]."""
    crop = crop.detach().cpu()
    if crop.dtype != torch.uint8:
        crop = (crop.clamp(0, 1) * 255).round().to(torch.uint8)
    return crop.permute(1, 2, 0).numpy()


def view_levels(source, paths: Sequence[str], indices: torch.Tensor, generated: torch.Tensor) -> list[int | None]:
    """The noise levels of a batch's generated views, from a view source that knows them (`level(path)`)."""
    level = getattr(source, "level", None)
    return [] if level is None else [level(paths[int(i)]) for i, g in zip(indices, generated) if g]


class EpochPictures:
    """Per-epoch collector of what the trainer's batches held; `write` renders and resets it."""

    def __init__(self, extremes: int = 4):
        self.extremes = extremes
        self._reset()

    def _reset(self) -> None:
        self.levels: list[int] = []
        self.weights: list[torch.Tensor] = []
        self.generated = self.samples = 0
        self.pairs: list[ShownPair] = []

    def add_batch(self, originals: torch.Tensor, views: torch.Tensor, w: torch.Tensor, generated: torch.Tensor,
                  levels: Sequence[int | None] = (), scores: PairQuality | None = None) -> None:
        """One batch: crops [B, 3, H, W] of the originals and of the views, weights w [B], generated flags [B],
        the noise level of each generated view (None where unknown), and the pairs' scores if the run scores."""
        w, generated = w.detach().float().cpu(), generated.cpu().bool()
        self.levels += [int(level) for level in levels if level is not None]
        self.weights.append(w)
        self.generated += int(generated.sum())
        self.samples += len(w)
        order = torch.argsort(w, descending=True).tolist()
        k = min(self.extremes, len(order) // 2) or len(order)
        picked = order[:k] + [i for i in order[-k:] if i not in order[:k]]

        def value(field: str, i: int) -> float | None:
            return None if scores is None else float(getattr(scores, field)[i])

        self.pairs = [ShownPair(_hwc(originals[i]), _hwc(views[i]), float(w[i]), bool(generated[i]),
                                value("q", i), value("s_f", i), value("s_b", i)) for i in picked]

    @property
    def generated_fraction(self) -> float:
        return self.generated / max(1, self.samples)

    def write(self, epoch: int, writer, folder: str | Path) -> list[Path]:
        """Send this epoch's pictures to `writer` (add_histogram / add_scalar / add_image, as TensorBoard's
        SummaryWriter) and write them as PNG files under `folder/pictures`; the files written. Then reset."""
        out = Path(folder) / PICTURES
        out.mkdir(parents=True, exist_ok=True)
        weights = torch.cat(self.weights) if self.weights else torch.zeros(0)
        pictures = {"quality_weights": histogram_image(weights.numpy(), "quality weight w (Eq. 13)")}
        writer.add_scalar("pictures/generated_fraction", self.generated_fraction, epoch)
        if len(weights):
            writer.add_histogram("pictures/quality_weight", weights, epoch)
        if self.levels:
            levels = np.asarray(self.levels)
            writer.add_histogram("pictures/noise_level", levels, epoch)
            pictures["noise_levels"] = histogram_image(levels, "noise level of the generated views (Eq. 8)",
                                                       LEVEL_RANGE)
        if self.pairs:
            pictures["pairs"] = pair_grid(self.pairs)
            writer.add_image("pictures/pairs", np.asarray(pictures["pairs"]), epoch, dataformats="HWC")
        pictures["generated_fraction"] = caption_image([f"epoch {epoch}: {self.generated_fraction:.1%} of "
                                                        f"{self.samples} samples trained on a generated view"])
        paths = []
        for name, image in pictures.items():
            paths.append(out / f"epoch{epoch:04d}-{name}.png")
            image.save(paths[-1])
        writer.flush()
        self._reset()
        return paths


def caption_image(lines: Sequence[str], width: int = 480) -> Image.Image:
    """Lines of text on white."""
    image = Image.new("RGB", (width, 14 * len(lines) + 2 * MARGIN), PAPER)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((MARGIN, MARGIN + 14 * row), line, fill=INK)
    return image


def histogram_image(values: np.ndarray, title: str, value_range: tuple[float, float] | None = None,
                    bins: int = 20, size: tuple[int, int] = (480, 240)) -> Image.Image:
    """A bar chart of `values` with its title, range and counts (drawn with PIL: no plotting library needed)."""
    width, height = size
    image = Image.new("RGB", size, PAPER)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, MARGIN), f"{title}: {len(values)} values", fill=INK)
    if len(values) == 0:
        return image
    low, high = value_range or (float(values.min()), float(values.max()))
    counts, edges = np.histogram(values, bins=bins, range=(low, high if high > low else low + 1))
    top, bottom, left, right = 24, height - 20, 36, width - MARGIN
    bar = (right - left) / bins
    for i, count in enumerate(counts):
        y = bottom - (bottom - top) * count / max(1, counts.max())
        draw.rectangle([left + i * bar + 1, y, left + (i + 1) * bar - 1, bottom], fill=BAR)
    draw.line([left, bottom, right, bottom], fill=INK)
    draw.text((MARGIN, top), str(int(counts.max())), fill=INK)
    draw.text((left, bottom + 4), f"{edges[0]:.4g}", fill=INK)
    draw.text((right - 40, bottom + 4), f"{edges[-1]:.4g}", fill=INK)
    return image


def pair_grid(pairs: Sequence[ShownPair]) -> Image.Image:
    """One row per pair, highest weight first: original crop | view crop | w, q, s_f, s_b."""
    row_height = TILE + MARGIN
    image = Image.new("RGB", (2 * TILE + PANEL + 3 * MARGIN, 16 + row_height * len(pairs) + MARGIN), PAPER)
    draw = ImageDraw.Draw(image)
    draw.text((MARGIN, 2), "original crop | view crop   (highest w first)", fill=INK)
    for row, pair in enumerate(pairs):
        y = 16 + row * row_height
        for column, crop in enumerate((pair.original, pair.view)):
            tile = Image.fromarray(crop).resize((TILE, TILE), Image.Resampling.BILINEAR)
            image.paste(tile, (MARGIN + column * (TILE + MARGIN), y))
        for line, text in enumerate(pair.caption()):
            draw.text((3 * MARGIN + 2 * TILE, y + 4 + 14 * line), text, fill=INK)
    return image
