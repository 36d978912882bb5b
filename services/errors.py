"""The one JSON error shape `{"error": code, "detail": ...}`: raising it, answering it, declaring it in OpenAPI."""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from genview.images import ImageRejected
from genview.queue import QueueUnavailable
from genview.store import InvalidKey, StoreUnavailable

log = logging.getLogger(__name__)
RETRY_AFTER_S = 5
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
STATUS_TEXT = {
    400: "bad request (undecodable or malformed input)", 401: "missing or invalid API key",
    404: "not found (or not visible to this API key)", 409: "conflict (e.g. no fitted PCA basis)",
    413: "body, upload or image too large", 415: "unsupported image format",
    422: "invalid parameters", 429: "queue full, retry later (Retry-After)",
    503: "queue or store unavailable, or too many bodies in flight; retry later (Retry-After)",
}


_PRIVATE = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]+"          # URLs (redis://…, s3://…, file://…)
                      r"|(?<![\w.])(?:/[^\s'\":,/]+){3,}/?"     # absolute paths of 3+ segments
                      r"|(?<![\w.])/(?:tmp|home|root|srv|var|data|mnt|opt|app|work)/[^\s'\":,]*"
                      r"|\b[\w.-]+:\d{2,5}\b", re.I)          # host:port


def public_error(message: str | None) -> str | None:
    """A job's error as clients may see it: URLs, host:port pairs and filesystem paths are cut out (logs keep them)."""
    return _PRIVATE.sub("<redacted>", message) if message else message


class ApiError(Exception):
    """An error answered as `{"error": code, "detail": message}` with an HTTP status."""

    def __init__(self, status: int, code: str, detail, headers: dict[str, str] | None = None):
        super().__init__(str(detail))
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


def error_response(status: int, code: str, detail, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one JSON shape of every error."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def retry_later(status: int, code: str, detail: str) -> ApiError:
    """A 429/503 error that tells the client when to come back."""
    return ApiError(status, code, detail, headers={"Retry-After": str(RETRY_AFTER_S)})


def outage_response(code: str, what: str, exc: Exception) -> JSONResponse:
    """503 with `Retry-After` for a backend that is down; the log keeps the cause, the client gets the what."""
    log.warning("answering 503 %s: %s", code, exc)
    return error_response(503, code, f"{what} is unreachable; retry later", {"Retry-After": str(RETRY_AFTER_S)})


def error_responses(*statuses: int) -> dict[int, dict]:
    """OpenAPI `responses=` entries for these statuses, each with the real error schema."""
    from genview.schemas import ErrorBody

    return {s: {"model": ErrorBody, "description": STATUS_TEXT[s]} for s in statuses}


GUARDED = error_responses(401, 413, 422)
"""What any route may answer: the request guard's 401 and 413, and 422 for invalid parameters."""


def allowed_methods(request: Request) -> str:
    """The `Allow` value of a 405: every method routed at this path (Starlette names only the first route's)."""
    routes = request.app.router.routes
    return ", ".join(m for m in HTTP_METHODS if any(
        route.matches({**request.scope, "method": m})[0] == Match.FULL for route in routes))


def install_error_handlers(app: FastAPI) -> None:
    """Every failure becomes a JSON error; validation errors say which field is wrong."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return error_response(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(ImageRejected)
    async def _image(_: Request, exc: ImageRejected):
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(InvalidKey)
    async def _key(_: Request, exc: InvalidKey):
        return error_response(400, "invalid_key", str(exc))

    @app.exception_handler(QueueUnavailable)
    async def _queue(_: Request, exc: QueueUnavailable):
        return outage_response("queue_unavailable", "the job queue", exc)

    @app.exception_handler(StoreUnavailable)
    async def _store(_: Request, exc: StoreUnavailable):
        return outage_response("store_unavailable", "the object store", exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        problems = [{"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
                    for e in exc.errors()]
        return error_response(422, "invalid_parameters", problems)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        headers = {**(exc.headers or {}), "Allow": allowed_methods(request)} if exc.status_code == 405 else exc.headers
        return error_response(exc.status_code, getattr(exc, "code", "http_error"), exc.detail, headers)
