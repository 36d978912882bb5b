"""Uploaded files: bounded reads, and image work off the event loop with every decoder failure a 400."""

from __future__ import annotations

import logging
from collections.abc import Callable
from tempfile import SpooledTemporaryFile
from typing import TypeVar

import anyio
from fastapi import Request, UploadFile

from genview.images import ImageRejected, validate_image
from genview.settings import Settings
from genview.store import sha256_hex
from services.errors import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")
SPOOL_IN_MEMORY = 1024 * 1024  # bytes of a spooled file kept in memory before it moves to disk


def spooled() -> SpooledTemporaryFile:
    """A temporary file that stays in memory while small and moves to disk past `SPOOL_IN_MEMORY`."""
    return SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


async def read_upload(upload: UploadFile, max_bytes: int, field: str) -> bytes:
    """The bytes of a multipart file field, refusing more than `max_bytes`."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "upload_too_large", f"{field} is larger than {max_bytes} bytes")
    return data


async def spool_body(request: Request) -> SpooledTemporaryFile:
    """The request body in a temporary file (on disk past a small size), rewound: a large body never sits in memory."""
    body = spooled()
    async for chunk in request.stream():
        body.write(chunk)
    body.seek(0)
    return body


def decoded(fn: Callable[..., T], *args, field: str = "image") -> T:
    """`fn(*args)`, decoding/resizing image bytes, with any image-library error turned into a 400 JSON answer."""
    try:
        return fn(*args)
    except (ImageRejected, ApiError):
        raise
    except MemoryError as exc:
        raise ApiError(413, "image_too_large", f"{field} needs too much memory to decode") from exc
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, struct.error, …)
        log.info("%s rejected by the image library", field, exc_info=True)
        raise ApiError(400, "undecodable_image", f"{field} could not be decoded ({type(exc).__name__})") from exc


async def image_work(fn: Callable[..., T], *args, field: str = "image") -> T:
    """`decoded(fn, *args)` in a worker thread."""
    return await anyio.to_thread.run_sync(lambda: decoded(fn, *args, field=field))


def checked_image(data: bytes, settings: Settings, field: str = "image") -> None:
    """400/413/415 unless `data` is an image within the pixel limit that decodes safely (blocking: off the loop)."""
    decoded(validate_image, data, settings.max_pixels, field=field)


async def check_image(data: bytes, settings: Settings, field: str = "image") -> None:
    """`checked_image` in a worker thread."""
    await anyio.to_thread.run_sync(checked_image, data, settings, field)


async def accept_image(upload: UploadFile, settings: Settings, field: str = "image") -> tuple[bytes, str]:
    """(bytes, SHA-256) of an uploaded image that is within the upload and pixel limits and decodes safely."""
    data = await read_upload(upload, settings.max_upload_bytes, field)
    await check_image(data, settings, field)
    return data, await anyio.to_thread.run_sync(sha256_hex, data)
