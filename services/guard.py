"""The request guard, first thing every request meets: API key (→ tenant), then the body limit of its route."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from genview.settings import Settings
from services.auth import PUBLIC, current_tenant, matches, presented_key, tenant_id
from services.errors import error_response
from services.limits import DEFAULT_BODY_LIMIT, declared_too_large, limited_receive

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect",
                        "/playground"})
OPEN_PREFIXES = ("/static/docs/",)
METRICS = "/metrics"


class RequestGuard:
    """ASGI middleware: 401 without a valid key, 413 past the body limit — before any body byte is read."""

    def __init__(self, app: ASGIApp, settings: Settings, body_limits: dict[str, int]):
        self.app, self.body_limits = app, body_limits
        self.keys, self.metrics_key = settings.api_key_set, settings.metrics_key

    def _tenant(self, path: str, headers: Headers) -> str | None:
        """The caller's tenant, or None when the request must be refused."""
        given = presented_key(headers)
        if path == METRICS and self.metrics_key:
            return PUBLIC if matches(given, frozenset({self.metrics_key})) else None
        if not self.keys or path in OPEN_PATHS or path == METRICS or path.startswith(OPEN_PREFIXES):
            return PUBLIC
        key = matches(given, self.keys)
        return tenant_id(key) if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, headers = scope["path"], Headers(scope=scope)
        tenant = self._tenant(path, headers)
        if tenant is None:
            response = error_response(401, "unauthorized", "a valid API key is required "
                                      "(Authorization: Bearer KEY or X-API-Key: KEY)")
            return await response(scope, receive, send)
        limit = self.body_limits.get(path, DEFAULT_BODY_LIMIT)
        if declared_too_large(headers.get("content-length"), limit):
            response = error_response(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")
            return await response(scope, receive, send)
        scope.setdefault("state", {})["tenant"] = tenant
        token = current_tenant.set(tenant)
        try:
            await self.app(scope, limited_receive(receive, limit), send)
        finally:
            current_tenant.reset(token)
