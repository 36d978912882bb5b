"""Safe image decoding: allow-listed formats, limits checked on the header before any decoding, EXIF orientation.

Every limit is checked before a pixel is decoded: the pixel count (decompression bombs), the short side and
the aspect ratio (a 100000×1 image would become a 4.5-gigapixel one when its short side is resized to 224).
Large JPEGs are decoded at a reduced DCT scale (`Image.draft`) when the caller says how small it will use them.
Whatever the image library raises on hostile bytes becomes an `ImageRejected` (a 4xx answer, never a 500).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
MAX_PIXELS = 40_000_000  # the default largest accepted image (width·height): decompression-bomb guard
MIN_SIDE = 8  # pixels: the shortest side accepted
MAX_ASPECT = 20  # the longest side is at most this many times the shortest
VALIDATION_SIDE = 64  # a JPEG is validated by decoding it at the DCT scale that keeps its short side ≥ this


class ImageRejected(ValueError):
    """The bytes are not an acceptable image; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about an accepted image."""

    format: str
    width: int
    height: int


def check_shape(width: int, height: int, max_pixels: int) -> None:
    """Reject sizes whose decoding or resizing would cost too much: pixel count, short side, aspect ratio."""
    if width <= 0 or height <= 0:
        raise ImageRejected(400, "empty_image", f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageRejected(413, "too_many_pixels",
                            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(400, "image_too_small", f"image is {width}x{height}; both sides must be ≥ {MIN_SIDE}")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageRejected(400, "extreme_aspect_ratio",
                            f"image is {width}x{height}; the long side may be at most {MAX_ASPECT}x the short side")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and check format and shape before any full decode."""
    if not data:
        raise ImageRejected(400, "empty_image", "the uploaded image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=None)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(413, "too_many_pixels", f"image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected(400, "undecodable_image", "the bytes are not a recognisable image") from exc
    except Exception as exc:  # hostile bytes reach any plugin's parser (IPTC, text-chunk bombs, ...)
        raise ImageRejected(400, "undecodable_image", f"the image header cannot be read: {exc}") from exc
    if img.format not in ALLOWED_FORMATS:
        raise ImageRejected(415, "unsupported_format",
                            f"image format {img.format} is not supported; send PNG, JPEG or WebP")
    check_shape(*img.size, max_pixels)
    return img


def _draft(img: Image.Image, min_side: int) -> None:
    """Let a JPEG decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps its short side ≥ `min_side`."""
    if img.format == "JPEG":
        scale = min_side / min(img.size)
        if scale < 1:
            img.draft("RGB", (math.ceil(img.width * scale), math.ceil(img.height * scale)))


def _decode(img: Image.Image) -> None:
    """Decode the pixels; any failure of the decoder is a corrupt image."""
    try:
        img.load()
    except Exception as exc:  # truncated data, bad compressed streams, oversized text chunks, ...
        raise ImageRejected(400, "corrupt_image", f"the {img.format} image is truncated or corrupt: {exc}") from exc


def validate_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that `data` is a complete PNG/JPEG/WebP within the limits (decodes it; JPEGs at a reduced scale)."""
    img = _open(data, max_pixels)
    info = ImageInfo(format=img.format, width=img.width, height=img.height)
    _draft(img, VALIDATION_SIDE)
    _decode(img)
    return info


def load_rgb(data: bytes, max_pixels: int, *, min_side: int | None = None) -> Image.Image:
    """Decode to an upright RGB image (EXIF orientation applied).

    With `min_side`, the image may come back smaller, but never with a short side below `min_side`
    (nor below its own): JPEGs are decoded at a reduced DCT scale, other formats box-reduced by an integer factor.
    """
    img = _open(data, max_pixels)
    if min_side:
        _draft(img, min_side)
    _decode(img)
    try:
        upright = ImageOps.exif_transpose(img)
        if min_side and (factor := min(upright.size) // min_side) >= 2:
            upright = upright.reduce(factor)
        return upright.convert("RGB")
    except Exception as exc:  # e.g. a malformed EXIF block
        raise ImageRejected(400, "corrupt_image", f"the {img.format} image cannot be converted: {exc}") from exc


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of an image (deterministic for the same pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
