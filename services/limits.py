"""Bounded requests: body size counted as bytes arrive (chunked or not), upload sizes, one value per form field."""

from __future__ import annotations

from collections import Counter

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from services.errors import ApiError

FORM_OVERHEAD = 64 * 1024  # multipart framing and the small fields next to an upload
DEFAULT_BODY_LIMIT = 64 * 1024  # JSON bodies and routes without an upload


class BodyTooLarge(HTTPException):
    """The body grew past its limit while it was being read."""

    code = "body_too_large"

    def __init__(self, limit: int):
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")


def limited_receive(receive: Receive, limit: int) -> Receive:
    """`receive` that counts body bytes as they arrive and raises `BodyTooLarge` past `limit` (reads no further)."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


def declared_too_large(content_length: str | None, limit: int) -> bool:
    """True when a `Content-Length` header is malformed or announces more than `limit` bytes."""
    return content_length is not None and (not content_length.isdigit() or int(content_length) > limit)


async def single_valued_form(request: Request) -> None:
    """Dependency: a declared form field sent twice is an error (422), not silently its last value (fields the
    route does not declare are ignored, however often they come)."""
    declared = {param.alias for param in request.scope["route"].dependant.body_params}
    form = await request.form()
    repeated = sorted(name for name, n in Counter(k for k, _ in form.multi_items() if k in declared).items() if n > 1)
    if repeated:
        raise ApiError(422, "invalid_parameters",
                       [{"field": name, "message": "given more than once"} for name in repeated])
