"""API keys: who is calling. With `GENVIEW_API_KEYS` every key is a tenant; without, everyone is one tenant."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

PUBLIC = "public"  # the tenant of every request when authentication is off
current_tenant: contextvars.ContextVar[str] = contextvars.ContextVar("genview_tenant", default=PUBLIC)


def tenant_id(key: str) -> str:
    """A stable, non-secret name for the tenant of an API key (what ownership records are filed under)."""
    return hashlib.sha256(f"genview-tenant:{key}".encode()).hexdigest()[:24]


def presented_key(headers: Headers) -> str:
    """The key a request presents: `Authorization: Bearer KEY` or `X-API-Key: KEY` ('' if none)."""
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip()
    return headers.get("x-api-key", "")


def matches(given: str, keys: frozenset[str]) -> str | None:
    """The configured key equal to `given`, compared in constant time against every key."""
    found = None
    for key in keys:
        if hmac.compare_digest(given.encode(), key.encode()):
            found = key
    return found


async def _tenant(request: Request) -> str:
    return request.scope.get("state", {}).get("tenant", PUBLIC)


Tenant = Annotated[str, Depends(_tenant)]
"""The calling tenant (set by the request guard before any body is read)."""
