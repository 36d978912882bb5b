"""PCA bases kept in the object store (`pca/{encoder_id}.safetensors`), with a short-lived cache."""

from __future__ import annotations

import threading
import time

from genview.method.noise import NoisePolicy
from genview.method.pca import PCABasis
from genview.store import ObjectNotFound, ObjectStore, pca_key

PER_IMAGE = "per-image"


BASIS_HINT = "run `genview fit-pca`, or POST /basis/fit, or send noise_level=auto:per-image"


class BasisRequired(ValueError):
    """A fitted (or imported) global PCA basis is needed and none is there, and per-image was not asked for."""


def uses_fitted_basis(policy: NoisePolicy) -> bool:
    """Whether the policy's levels depend on a fitted global basis (adaptive, not asked per image)."""
    return policy.kind == "adaptive" and not policy.per_image


def require_basis(policy: NoisePolicy, basis_available: bool) -> None:
    """Raise BasisRequired when the adaptive policy meets no fitted basis: it never degrades silently."""
    if uses_fitted_basis(policy) and not basis_available:
        raise BasisRequired(f"the adaptive noise policy needs a fitted PCA basis: {BASIS_HINT}")


def save_basis(store: ObjectStore, encoder_id: str, basis: PCABasis) -> str:
    """Write (replace) the basis of an encoder; returns its store key."""
    key = pca_key(encoder_id)
    store.put(key, basis.to_bytes(), overwrite=True)
    return key


class StaleBasis(ValueError):
    """A job was keyed on a basis that has since been replaced: it fails for good (retrying cannot bring the old
    basis back); submitting the request again keys it on the current basis."""


class BasisCache:
    """The current basis of one encoder, re-read from the store at most every `ttl_s` seconds."""

    def __init__(self, store: ObjectStore, encoder_id: str, ttl_s: float = 10.0):
        self.store, self.key, self.ttl_s = store, pca_key(encoder_id), ttl_s
        self._lock = threading.Lock()
        self._basis: PCABasis | None = None
        self._read_at = -float("inf")

    def current(self, refresh: bool = False) -> PCABasis | None:
        """The fitted basis, or None when none has been fitted."""
        with self._lock:
            if refresh or time.monotonic() - self._read_at > self.ttl_s:
                try:
                    self._basis = PCABasis.from_bytes(self.store.get(self.key))
                except ObjectNotFound:
                    self._basis = None
                self._read_at = time.monotonic()
            return self._basis

    def matching(self, fingerprint: str) -> PCABasis | None:
        """The basis a request was keyed on: None for 'per-image'; StaleBasis if it is no longer current."""
        if fingerprint == PER_IMAGE:
            return None
        for refresh in (False, True):
            basis = self.current(refresh)
            if basis is not None and basis.fingerprint == fingerprint:
                return basis
        raise StaleBasis(f"stale_basis: PCA basis {fingerprint} of this job was replaced by a new fit; "
                         f"submit the request again to use the current basis")

    def fingerprint(self) -> str:
        """The basis id that goes into cache keys: its fingerprint, or 'per-image'."""
        basis = self.current()
        return basis.fingerprint if basis else PER_IMAGE
