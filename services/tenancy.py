"""Who may see what: with API keys, an input (and so its jobs, views and gallery entries) belongs to the
tenants that uploaded it. Storage stays content-addressed; ownership is a marker `tenants/{tenant}/inputs/{sha}`."""

from __future__ import annotations

import re

from genview.basis import DEFAULT_OWNER
from genview.queue import Job
from genview.store import ObjectNotFound, ObjectStore, owned_inputs_prefix, owner_key
from services.auth import PUBLIC, current_tenant

SHA_IN_KEY = re.compile(r"^(?:inputs|views)/([0-9a-f]{64})(?:/|$)")


def basis_owner(tenant: str) -> str:
    """Whose basis versions a tenant uses and fits: its own; an open service's one tenant owns the default."""
    return DEFAULT_OWNER if tenant == PUBLIC else tenant


def inputs_scope(tenant: str) -> str | None:
    """Whose inputs a tenant's basis fit samples: its own (None: every input, an open service)."""
    return None if tenant == PUBLIC else tenant


class Ownership:
    """Records and checks which tenant uploaded which input (no-ops for the one tenant of an open service)."""

    def __init__(self, store: ObjectStore):
        self.store = store

    def record(self, tenant: str, sha: str) -> None:
        if tenant != PUBLIC:
            self.store.put(owner_key(tenant, sha), b"")

    def owns(self, tenant: str, sha: str) -> bool:
        return tenant == PUBLIC or self.store.exists(owner_key(tenant, sha))

    def owned(self, tenant: str) -> set[str] | None:
        """The input hashes of `tenant` (None: everything, authentication is off)."""
        if tenant == PUBLIC:
            return None
        return {key.rsplit("/", 1)[1] for key in self.store.list(owned_inputs_prefix(tenant))}

    def may_see_key(self, tenant: str, key: str) -> bool:
        """Whether `tenant` may read the store object `key` (inputs/… and views/… belong to their input)."""
        match = SHA_IN_KEY.match(key)
        return match is None or self.owns(tenant, match.group(1))

    def may_see_job(self, tenant: str, job: Job) -> bool:
        """A job belongs to the tenant that submitted it (never to others who uploaded the same bytes)."""
        if tenant == PUBLIC:
            return True
        return job.payload.get("tenant") == tenant


class TenantScopedStore:
    """The store as the current request's tenant sees it (inputs and views of others are absent).

    For code that takes a store and knows nothing of tenants (the gallery); the tenant comes from the
    request guard through a context variable."""

    def __init__(self, store: ObjectStore):
        self._store, self._owners = store, Ownership(store)

    def __getattr__(self, name):
        return getattr(self._store, name)

    def list(self, prefix: str = "") -> list[str]:
        owned = self._owners.owned(current_tenant.get())
        keys = self._store.list(prefix)
        if owned is None:
            return keys
        return [k for k in keys if (m := SHA_IN_KEY.match(k)) is None or m.group(1) in owned]

    def exists(self, key: str) -> bool:
        return self._owners.may_see_key(current_tenant.get(), key) and self._store.exists(key)

    def get(self, key: str) -> bytes:
        if not self._owners.may_see_key(current_tenant.get(), key):
            raise ObjectNotFound(key)
        return self._store.get(key)
