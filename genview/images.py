"""Safe image decoding: allow-listed formats, pixel limit checked before full decoding, EXIF orientation."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "WEBP"})


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


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and check format and pixel count before any full decode."""
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
    if img.format not in ALLOWED_FORMATS:
        raise ImageRejected(415, "unsupported_format",
                            f"image format {img.format} is not supported; send PNG, JPEG or WebP")
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageRejected(400, "empty_image", f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageRejected(413, "too_many_pixels",
                            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return img


def validate_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check that `data` is a complete PNG/JPEG/WebP within the pixel limit (decodes it fully)."""
    img = _open(data, max_pixels)
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, "corrupt_image", f"the {img.format} image is truncated or corrupt: {exc}") from exc
    return ImageInfo(format=img.format, width=img.width, height=img.height)


def load_rgb(data: bytes, max_pixels: int) -> Image.Image:
    """Decode to an upright RGB image (EXIF orientation applied)."""
    img = _open(data, max_pixels)
    try:
        img.load()
        return ImageOps.exif_transpose(img).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(400, "corrupt_image", f"the {img.format} image is truncated or corrupt: {exc}") from exc


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes of an image (deterministic for the same pixels)."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
