"""Finding image files in a folder (recursive), a file list, or an fsspec URL (s3://, …)."""

from __future__ import annotations

import fsspec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def list_images(source: str) -> list[str]:
    """Sorted image paths/URLs under a folder, or the lines of a `.txt` file list."""
    fs, root = fsspec.core.url_to_fs(source)
    if fs.isfile(root):
        with fs.open(root, "rt") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    found = sorted(p for p in fs.find(root) if p.lower().endswith(IMAGE_SUFFIXES))
    return found if protocol in ("file", "local") else [f"{protocol}://{p}" for p in found]


def read_bytes(path: str) -> bytes:
    """The bytes of a local path or fsspec URL."""
    with fsspec.open(path, "rb") as f:
        return f.read()
