"""Bounded requests: body size counted as bytes arrive (chunked or not), a budget of body bytes in flight, upload
sizes, one value per form field."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from services.errors import RETRY_AFTER_S, ApiError

FORM_OVERHEAD = 64 * 1024  # multipart framing and the small fields next to an upload
DEFAULT_BODY_LIMIT = 64 * 1024  # JSON bodies and routes without an upload


class BodyTooLarge(HTTPException):
    """The body grew past its limit while it was being read."""

    code = "body_too_large"

    def __init__(self, limit: int):
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")


class BudgetExhausted(HTTPException):
    """Too many body bytes are in flight in this process; the client should come back later."""

    code = "too_many_bodies_in_flight"

    def __init__(self):
        super().__init__(503, "the server holds as many request bodies as it may; retry later",
                         headers={"Retry-After": str(RETRY_AFTER_S)})


class BodyBudget:
    """The body bytes the requests of an app (one per process) may hold at once: a request is admitted with its
    `Content-Length` (a chunked one grows as it streams) while the total stays within `total`. A request alone is
    always admitted: the size of a single body is its route's limit. Used from the event loop only (no lock)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0

    def take(self, n: int) -> bool:
        """Reserve `n` bytes → True, or False (nothing reserved) when that would go over the budget."""
        if n and self.used and self.used + n > self.total:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


def limited_receive(receive: Receive, limit: int, budget: BodyBudget | None = None) -> tuple[Receive, list[int]]:
    """`receive` that counts body bytes as they arrive, raising `BodyTooLarge` past `limit` and (for a body of
    undeclared length: give `budget`) `BudgetExhausted` once the budget cannot take them (reads no further); and
    a one-item list holding the bytes it reserved in `budget` so far (for the caller to give back)."""
    seen, reserved = 0, [0]

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            size = len(message.get("body", b""))
            seen += size
            if seen > limit:
                raise BodyTooLarge(limit)
            if budget is not None:
                if not budget.take(size):
                    raise BudgetExhausted()
                reserved[0] += size
        return message

    return counted, reserved


def declared_too_large(content_length: str | None, limit: int) -> bool:
    """True when a `Content-Length` header is malformed or announces more than `limit` bytes."""
    return content_length is not None and (not content_length.isdigit() or int(content_length) > limit)


def given_twice(names: Iterable[str], declared: Collection[str]) -> None:
    """422 `invalid_parameters` naming each of the `declared` fields that occurs more than once in `names`."""
    repeated = sorted(name for name, n in Counter(k for k in names if k in declared).items() if n > 1)
    if repeated:
        raise ApiError(422, "invalid_parameters",
                       [{"field": name, "message": "given more than once"} for name in repeated])


async def single_valued_form(request: Request) -> None:
    """Dependency: a declared form field sent twice is an error (422), not silently its last value (fields the
    route does not declare are ignored, however often they come)."""
    declared = {param.alias for param in request.scope["route"].dependant.body_params}
    form = await request.form()
    given_twice((k for k, _ in form.multi_items()), declared)
