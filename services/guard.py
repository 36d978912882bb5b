"""The request guard, first thing every request meets: API key (→ tenant), the body limit of its route, then the
budget of body bytes in flight."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from genview.settings import Settings
from services.auth import PUBLIC, current_tenant, matches, presented_key, tenant_id
from services.errors import error_response
from services.limits import (DEFAULT_BODY_LIMIT, BodyBudget, BudgetExhausted, declared_too_large,
                             limited_receive)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect",
                        "/playground"})
OPEN_PREFIXES = ("/static/docs/",)
METRICS = "/metrics"


class RequestGuard:
    """ASGI middleware: 401 without a valid key, 413 past the body limit, 503 while the bodies in flight fill the
    budget — before any body byte is read (a chunked body: as soon as it goes over)."""

    def __init__(self, app: ASGIApp, settings: Settings, body_limits: dict[str, int], budget: BodyBudget):
        self.app, self.body_limits, self.budget = app, body_limits, budget
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
        limit, declared = self.body_limits.get(path, DEFAULT_BODY_LIMIT), headers.get("content-length")
        if declared_too_large(declared, limit):
            response = error_response(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")
            return await response(scope, receive, send)
        if declared is not None and not self.budget.take(int(declared)):
            busy = BudgetExhausted()
            return await error_response(503, busy.code, busy.detail, busy.headers)(scope, receive, send)
        scope.setdefault("state", {})["tenant"] = tenant
        token = current_tenant.set(tenant)
        counted, streamed = limited_receive(receive, limit, None if declared is not None else self.budget)
        try:
            await self.app(scope, counted, send)
        finally:
            current_tenant.reset(token)
            self.budget.give(int(declared) if declared is not None else streamed[0])
