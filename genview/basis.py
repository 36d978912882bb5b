"""PCA bases as immutable, content-named versions kept in the object store, owned per tenant.

The bytes of a version live once under `basis_key(encoder, id)`; each owner (a tenant, or `DEFAULT_OWNER`, the
operator's published default) records its versions and names its current one. A request resolves "the current
basis" to an id once, when it is accepted; workers load any id they are given (`BasisStore.load`, LRU-cached),
so a later fit or pin never changes, fails or delays an accepted job.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from pydantic import BaseModel

from genview.method.noise import NoisePolicy
from genview.method.pca import PCABasis
from genview.schemas import BasisVersion
from genview.store import (DEFAULT_OWNER, ObjectNotFound, ObjectStore, basis_key, basis_version_key,
                           basis_versions_prefix, current_basis_key, legacy_basis_key)

PER_IMAGE = "per-image"
CACHED_BASES = 8  # basis versions a process keeps decoded

BASIS_HINT = ("adaptive generation and quality scoring need a fitted or imported PCA basis: fit one "
              "(`genview fit-pca --encoder generator` / `genview fit-pca --encoder scorer`, or --import-official; "
              "POST /basis/fit / POST /score/basis/fit), or ask for the per-image estimate by name "
              "(noise_policy=auto:per-image on /generate, basis=per-image on /score and /score/batch)")


class BasisRequired(ValueError):
    """A fitted (or imported) basis is needed and none is there, and per-image was not asked for."""


class UnknownBasis(LookupError):
    """No basis version with that id is stored (or the owner may not use it)."""


def uses_fitted_basis(policy: NoisePolicy) -> bool:
    """Whether the policy's levels depend on a fitted global basis (adaptive, not asked per image)."""
    return policy.kind == "adaptive" and not policy.per_image


def require_basis(policy: NoisePolicy, basis_available: bool) -> None:
    """Raise BasisRequired when the adaptive policy meets no fitted basis: it never degrades silently."""
    if uses_fitted_basis(policy) and not basis_available:
        raise BasisRequired(BASIS_HINT)


class CurrentBasis(BaseModel):
    """The pointer object of an owner: which version is current."""

    basis_id: str


class BasisStore:
    """One encoder's basis versions in an object store: save, load by id (cached), list, resolve, pin."""

    def __init__(self, store: ObjectStore, encoder_id: str, cache_size: int = CACHED_BASES):
        self.store, self.encoder_id, self.cache_size = store, encoder_id, cache_size
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, PCABasis] = OrderedDict()

    def save(self, basis: PCABasis, owner: str, images: int = 0, make_current: bool = True) -> str:
        """Store `basis` as a version of `owner` (bytes written once, by content); returns its id."""
        basis_id = basis.fingerprint
        self.store.put(basis_key(self.encoder_id, basis_id), basis.to_bytes())
        record = BasisVersion(basis_id=basis_id, images=images, threshold=basis.threshold, created=time.time())
        self.store.put(basis_version_key(owner, self.encoder_id, basis_id), record.model_dump_json().encode())
        if make_current:
            self._point(owner, basis_id)
        return basis_id

    def load(self, basis_id: str) -> PCABasis:
        """The version `basis_id` (immutable, so cached for good); UnknownBasis if none is stored."""
        with self._lock:
            if basis_id in self._cache:
                self._cache.move_to_end(basis_id)
                return self._cache[basis_id]
        try:
            basis = PCABasis.from_bytes(self.store.get(basis_key(self.encoder_id, basis_id)))
        except ObjectNotFound:
            raise UnknownBasis(f"no PCA basis {basis_id!r} of {self.encoder_id} is stored") from None
        with self._lock:
            self._cache[basis_id] = basis
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return basis

    def versions(self, owner: str) -> list[BasisVersion]:
        """`owner`'s versions, oldest first."""
        keys = self.store.list(basis_versions_prefix(owner, self.encoder_id))
        found = []
        for key in keys:
            try:
                found.append(BasisVersion.model_validate_json(self.store.get(key)))
            except ObjectNotFound:
                continue
        return sorted(found, key=lambda v: v.created)

    def own_current(self, owner: str) -> str | None:
        """The id `owner` has made current, or None."""
        try:
            return CurrentBasis.model_validate_json(self.store.get(current_basis_key(owner, self.encoder_id))).basis_id
        except ObjectNotFound:
            return None

    def resolve(self, owner: str) -> tuple[str | None, str | None]:
        """(current id, whose: 'own' | 'default') for `owner`: its own current version, else the default's."""
        own = self.own_current(owner)
        if own is not None:
            return own, "own" if owner != DEFAULT_OWNER else "default"
        default = self.own_current(DEFAULT_OWNER) or self._adopt_legacy()
        return default, "default" if default else None

    def _adopt_legacy(self) -> str | None:
        """A store written before basis versions: its one basis becomes the default version (once), or None."""
        try:
            data = self.store.get(legacy_basis_key(self.encoder_id))
        except ObjectNotFound:
            return None
        return self.save(PCABasis.from_bytes(data), DEFAULT_OWNER)

    def current_id(self, owner: str) -> str | None:
        """The id of the basis `owner`'s requests use now (None: there is none)."""
        return self.resolve(owner)[0]

    def current(self, owner: str = DEFAULT_OWNER) -> PCABasis | None:
        """The basis `owner`'s requests use now, or None."""
        basis_id = self.current_id(owner)
        return None if basis_id is None else self.load(basis_id)

    def pin(self, owner: str, basis_id: str) -> None:
        """Make one of `owner`'s versions (or the default's current one) its current basis; UnknownBasis if not."""
        mine = self.store.exists(basis_version_key(owner, self.encoder_id, basis_id))
        if not (mine or basis_id == self.own_current(DEFAULT_OWNER)):
            raise UnknownBasis(f"{basis_id!r} is none of your {self.encoder_id} basis versions nor the default")
        self._point(owner, basis_id)

    def _point(self, owner: str, basis_id: str) -> None:
        self.store.put(current_basis_key(owner, self.encoder_id), CurrentBasis(basis_id=basis_id).model_dump_json()
                       .encode(), overwrite=True)
