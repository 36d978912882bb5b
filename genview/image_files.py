"""Finding image files in a folder (recursive), a file list, or an fsspec URL (s3://, …)."""

from __future__ import annotations

import fsspec

from genview.errors import NoImagesError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def _source(source: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, its path of `source`, the prefix listed paths carry: "" locally, else "protocol://")."""
    fs, root = fsspec.core.url_to_fs(source)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, root, "" if protocol in ("file", "local") else f"{protocol}://"


def list_images(source: str) -> list[str]:
    """Sorted image paths/URLs under a folder, or the lines of a `.txt` file list.

    A local folder's paths are absolute, whether `source` is relative or absolute (see `source_root`)."""
    fs, root, prefix = _source(source)
    if fs.isfile(root):
        with fs.open(root, "rt") as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    return [prefix + p for p in sorted(fs.find(root)) if p.lower().endswith(IMAGE_SUFFIXES)]


def require_source(source: str) -> None:
    """NoImagesError unless `source` exists (cheap: no listing)."""
    fs, root, _ = _source(source)
    if not fs.exists(root):
        raise NoImagesError(f"{source} does not exist")


def require_images(source: str) -> list[str]:
    """`list_images`, refusing a source that does not exist or holds no images (NoImagesError)."""
    require_source(source)
    paths = list_images(source)
    if not paths:
        raise NoImagesError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) in {source}")
    return paths


def source_root(source: str) -> str:
    """The folder `source` names, spelled as `list_images` spells the paths under it (absolute when local)."""
    _, root, prefix = _source(source)
    return prefix + root.rstrip("/")


def relative_to(root: str, path: str) -> str | None:
    """`path` relative to `source_root`'s `root`, or None when it is not below it."""
    return path[len(root) + 1:] if path.startswith(root + "/") else None


def read_bytes(path: str) -> bytes:
    """The bytes of a local path or fsspec URL."""
    with fsspec.open(path, "rb") as f:
        return f.read()
