"""Labelled subsets for semi-supervised fine-tuning: deterministic and class-balanced, or read from a list file.

A list file names one image per line, as a path below the training root (`n01440764/n01440764_10026.JPEG`)
or a bare file name (the published ImageNet 1%/10% lists of SimCLR: `n01440764_10026.JPEG`).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from trainer.eval.data import Labelled


def _rank_key(seed: int, relative: str) -> bytes:
    """Order of an image within its class: a hash of (seed, path), independent of listing order."""
    return hashlib.sha256(f"{seed}:{relative}".encode()).digest()


def balanced_subset(images: Labelled, fraction: float, seed: int = 0) -> list[int]:
    """Indices of round(fraction · n_c) images (at least one) of each class c, chosen by a seeded hash."""
    if not 0 < fraction <= 1:
        raise SystemExit(f"--fraction must be in (0, 1], got {fraction}")
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(images.labels):
        by_class[label].append(i)
    chosen = []
    for members in by_class.values():
        members.sort(key=lambda i: _rank_key(seed, images.relative[i]))
        chosen += members[:max(1, round(fraction * len(members)))]
    return sorted(chosen)


def read_subset(images: Labelled, list_file: str) -> list[int]:
    """Indices of exactly the images a list file names; a name that matches no image, or several, is an error."""
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, rel in enumerate(images.relative):
        for name in {rel, rel.rsplit("/", 1)[-1]}:
            by_name[name].append(i)
    wanted = [line.strip() for line in Path(list_file).read_text().splitlines() if line.strip()]
    missing = [w for w in wanted if len(by_name.get(w, [])) == 0]
    ambiguous = [w for w in wanted if len(set(by_name.get(w, []))) > 1]
    if missing or ambiguous:
        raise SystemExit(f"{list_file}: {len(missing)} names match no training image (e.g. {missing[:3]}), "
                         f"{len(ambiguous)} match several (e.g. {ambiguous[:3]})")
    return sorted({by_name[w][0] for w in wanted})


def write_subset(images: Labelled, indices: list[int], path: Path) -> None:
    """The chosen images as a list file (paths below the training root), so later runs use the same subset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(images.relative[i] + "\n" for i in sorted(indices)))
