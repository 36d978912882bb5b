"""API keys: who is calling. With `GENVIEW_API_KEYS` every key is a tenant; without, everyone is one tenant."""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers

from genview.settings import Settings

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


def is_loopback(host: str) -> bool:
    """Whether `host` (what an API binds to) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def anonymous_refusal(settings: Settings, host: str) -> str | None:
    """Why an API must not start (one line), or None: without API keys it serves anonymously only on a loopback
    address, or anywhere when `GENVIEW_ALLOW_ANONYMOUS=true` says so on purpose."""
    if settings.api_key_set or settings.allow_anonymous or is_loopback(host):
        return None
    return (f"refusing to serve without API keys on {host}: set GENVIEW_API_KEYS (comma-separated keys), or "
            "GENVIEW_ALLOW_ANONYMOUS=true to let anyone who reaches this address use the API")


def access_mode(settings: Settings, host: str) -> str:
    """Who may call an API started on `host`, for its start-up line."""
    if settings.api_key_set:
        return f"API keys required ({len(settings.api_key_set)} tenants)"
    why = "on loopback" if is_loopback(host) else "GENVIEW_ALLOW_ANONYMOUS=true"
    return f"ANONYMOUS: no API keys, anyone who reaches {host} may call it ({why})"


async def _tenant(request: Request) -> str:
    return request.scope.get("state", {}).get("tenant", PUBLIC)


Tenant = Annotated[str, Depends(_tenant)]
"""The calling tenant (set by the request guard before any body is read)."""
