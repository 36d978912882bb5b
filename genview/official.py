"""The official repository's training layout: `train_variations/<path>` (each image's first view) and
`fg_ratios.txt` (`<path> <p>` lines), written from either dataset engine (manifest or shards)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OfficialView:
    """One image as the official layout needs it: its path, its foreground ratio and its first view's bytes."""

    path: str
    fg_ratio: float
    first_view: Callable[[], bytes]


def export_official(views: Iterable[OfficialView], out_dir: str) -> int:
    """Write `train_variations/<path>` (a view already there is kept: reruns resume) and `fg_ratios.txt`."""
    root = Path(out_dir)
    ratios = []
    for view in views:
        target = root / "train_variations" / view.path
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(view.first_view())
            tmp.replace(target)
        ratios.append((view.path, view.fg_ratio))
    root.mkdir(parents=True, exist_ok=True)
    (root / "fg_ratios.txt").write_text("".join(f"{path} {ratio}\n" for path, ratio in sorted(ratios)))
    return len(ratios)
