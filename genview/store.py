"""Content-addressed object store over fsspec: local files, S3 (or MinIO) and memory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import wraps
from typing import BinaryIO, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

MAX_KEY_LEN = 512
COPY_CHUNK = 1024 * 1024  # bytes per read when an object is written from a file
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ObjectNotFound(KeyError):
    """No object is stored under the key."""


class InvalidKey(ValueError):
    """The key is not allowed (see `validate_key`)."""


class StoreUnavailable(OSError):
    """The store's backend failed (unreachable, unwritable, unmounted); try again later."""


F = TypeVar("F", bound=Callable)


def _backend_failure(exc: BaseException) -> bool:
    """Whether `exc` is the backend failing (an OS or S3-client error), not a missing object or a bad key."""
    if isinstance(exc, (ObjectNotFound, InvalidKey, StoreUnavailable)):
        return False
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore")


def _reachable(method: F) -> F:
    """Raise `StoreUnavailable` (from the cause) when the backend fails during `method`."""

    @wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            if _backend_failure(exc):
                raise StoreUnavailable(f"the object store failed: {type(exc).__name__}: {exc}") from exc
            raise

    return wrapper  # type: ignore[return-value]


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def params_hash(params: dict) -> str:
    """First 32 hex chars of the SHA-256 of `params` as canonical JSON."""
    canon = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_hex(canon.encode("utf-8"))[:32]


def _key_problem(key: object) -> str | None:
    """Why `key` is not a valid key, or None when it is."""
    if not isinstance(key, str):
        return f"key must be a string, not {type(key).__name__}"
    if not key:
        return "key is empty"
    if len(key) > MAX_KEY_LEN:
        return f"key is longer than {MAX_KEY_LEN} characters"
    if "\\" in key:
        return "key contains a backslash"
    if key.startswith("/"):
        return "key starts with '/'"
    if ".." in key:
        return "key contains '..'"
    for segment in key.split("/"):
        if not segment:
            return "key has an empty segment"
        if not _SEGMENT.fullmatch(segment):
            return (f"key segment {segment[:40]!r} must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
    return None


def validate_key(key: str) -> str:
    """Return `key` if it is an allowed object key, else raise InvalidKey saying why."""
    problem = _key_problem(key)
    if problem:
        raise InvalidKey(problem)
    return key


INPUT_KEY_PATTERN = r"^inputs/[0-9a-f]{64}$"  # what `input_key` builds from a SHA-256


def input_key(sha: str) -> str:
    """Key of an uploaded input image."""
    return validate_key(f"inputs/{sha}")


def view_key(sha: str, phash: str, index: int, ext: str = "png") -> str:
    """Key of generated view `index` of input `sha` under parameters `phash`."""
    return validate_key(f"views/{sha}/{phash}/{index}.{ext}")


def view_meta_key(sha: str, phash: str) -> str:
    """Key of the result document of the views of input `sha` under parameters `phash`."""
    return validate_key(f"views/{sha}/{phash}/meta.json")


META_KEY = re.compile(r"views/([^/]+)/([^/]+)/meta\.json")  # what `view_meta_key` builds: (sha, phash)


def fg_map_key(sha: str, phash: str) -> str:
    """Key of the foreground map of input `sha` under parameters `phash` (a PNG, served by /views like views)."""
    return validate_key(f"views/{sha}/{phash}/fg.png")


def view_key_at(path: str) -> str:
    """The key of a `/views/{path}` URL path (a view or foreground map)."""
    return validate_key(f"views/{path}")


def owner_key(tenant: str, sha: str) -> str:
    """Key of the marker that `tenant` uploaded input `sha`."""
    return validate_key(f"{owned_inputs_prefix(tenant)}/{sha}")


def owned_inputs_prefix(tenant: str) -> str:
    """The prefix below which `owner_key` markers of `tenant` live."""
    return f"tenants/{tenant}/inputs"


DEFAULT_OWNER = "default"  # owner of the operator's basis versions (tenant ids are hex digests or "public")


def basis_key(encoder_id: str, basis_id: str) -> str:
    """Key of one immutable PCA basis version of an encoder, named by its content (its fingerprint)."""
    return validate_key(f"bases/{encoder_id}/{basis_id}.safetensors")


def legacy_basis_key(encoder_id: str) -> str:
    """Where releases before basis versions kept an encoder's one basis (adopted as the default version)."""
    return validate_key(f"pca/{encoder_id}.safetensors")


def basis_versions_prefix(owner: str, encoder_id: str) -> str:
    """The prefix below which `basis_version_key` records of `owner` live."""
    return f"tenants/{owner}/bases/{encoder_id}"


def basis_version_key(owner: str, encoder_id: str, basis_id: str) -> str:
    """Key of the record that `owner` (a tenant, or the operator's default) fitted or imported a basis version."""
    return validate_key(f"{basis_versions_prefix(owner, encoder_id)}/{basis_id}.json")


def current_basis_key(owner: str, encoder_id: str) -> str:
    """Key of the pointer naming `owner`'s current basis version of an encoder (the one mutable basis object)."""
    return validate_key(f"tenants/{owner}/current-basis/{encoder_id}.json")


def score_body_key(tenant: str, pair_sha: str) -> str:
    """Key of a tenant's scoring job's pairs body: transient (the worker deletes it once scored), never under
    `inputs/`; per tenant, so one tenant's finished job never removes the body another's still needs."""
    return validate_key(f"score-bodies/{tenant}/{pair_sha}")


def score_key(tenant: str, pair_sha: str, phash: str) -> str:
    """Key of `tenant`'s scores of an (original, view) pair under parameters `phash` (no tenant sees another's)."""
    return validate_key(f"scores/{tenant}/{pair_sha}/{phash}.json")


def _overlap(fn, keys) -> dict[str, Future]:
    """`fn(key)` for every key, in threads when there are several."""
    keys = list(keys)
    if len(keys) < 2:
        futures = {}
        for key in keys:
            futures[key] = Future()
            try:
                futures[key].set_result(fn(key))
            except Exception as exc:
                futures[key].set_exception(exc)
        return futures
    with ThreadPoolExecutor(min(8, len(keys)), thread_name_prefix="store-put") as pool:
        return {key: pool.submit(fn, key) for key in keys}


def _results(futures: dict[str, Future], cleanup=None) -> dict:
    """The results by key; if any call failed, `cleanup(result)` for the others and raise the first error."""
    failed = [f.exception() for f in futures.values() if f.exception() is not None]
    if failed:
        for future in futures.values():
            if cleanup is not None and future.exception() is None:
                cleanup(future.result())
        raise failed[0]
    return {key: future.result() for key, future in futures.items()}


class ObjectStore:
    """Write-once byte objects under validated keys, below a root URL."""

    def __init__(self, url: str, endpoint_url: str | None = None):
        protocol, sep, rest = url.partition("://")
        if not sep:
            protocol, rest = "file", url
        if protocol == "file":
            self.fs = LocalFileSystem()
            root = LocalFileSystem._strip_protocol(os.path.abspath(os.path.expanduser(rest)))
            os.makedirs(root, exist_ok=True)
            self.url = f"file://{root}"
        elif protocol == "s3":
            root = rest.strip("/")
            if not root:
                raise ValueError(f"s3 store URL needs a bucket: {url!r}")
            self.fs = fsspec.filesystem(
                "s3", skip_instance_cache=True, use_listings_cache=False,
                client_kwargs={"endpoint_url": endpoint_url} if endpoint_url else {},
            )
            self.url = f"s3://{root}"
        elif protocol == "memory":
            name = rest.strip("/")
            if not name:
                raise ValueError(f"memory store URL needs a name: {url!r}")
            self.fs = fsspec.filesystem("memory")
            root = f"/{name}"
            self.url = f"memory://{name}"
        else:
            raise ValueError(f"unsupported store URL {url!r}: use file://, s3:// or memory://")
        self.protocol = protocol
        self._root = root

    @classmethod
    def from_settings(cls, settings) -> ObjectStore:
        """The store configured by `settings.store_url` and `settings.s3_endpoint_url`."""
        return cls(settings.store_url, endpoint_url=settings.s3_endpoint_url)

    def _path(self, key: str) -> str:
        return f"{self._root}/{validate_key(key)}"

    @_reachable
    def put(self, key: str, data: bytes | BinaryIO, *, overwrite: bool = False, durable: bool = True) -> bool:
        """Write `data` (bytes, or the rest of a binary file, streamed) atomically unless the object exists and not
        `overwrite`; True if written. `durable=False` skips the fsync of a local file (transient objects)."""
        path = self._path(key)
        if not overwrite and self.exists(key):
            return False
        if self.protocol == "file":
            os.replace(self._stage_local(path, data, durable), path)
        elif isinstance(data, (bytes, bytearray, memoryview)):
            self.fs.pipe_file(path, bytes(data))
        else:
            with self.fs.open(path, "wb") as f:
                shutil.copyfileobj(data, f, COPY_CHUNK)
        return True

    @_reachable
    def put_many(self, objects: dict[str, bytes], last: str | None = None) -> set[str]:
        """Write-once `put` of several objects as one durable commit: their fsyncs (which the file system joins
        into one journal commit) or S3 requests overlap. `last`, one of the keys, becomes visible only after all
        the others (a document naming them). All are stored on return; answers the keys written (new ones)."""
        todo = {key: data for key, data in objects.items() if not self.exists(key)}
        if self.protocol != "file":
            _results(_overlap(lambda key: self.fs.pipe_file(self._path(key), bytes(todo[key])), todo.keys() - {last}))
            if last in todo:
                self.fs.pipe_file(self._path(last), bytes(todo[last]))
            return set(todo)
        staged = _results(_overlap(lambda key: self._stage_local(self._path(key), todo[key]), list(todo)),
                          cleanup=os.remove)
        for key in sorted(staged, key=lambda k: k == last):  # `last` renamed last
            os.replace(staged[key], self._path(key))
        return set(todo)

    @staticmethod
    def _stage_local(path: str, data: bytes | BinaryIO, durable: bool = True) -> str:
        """Write a temp file next to `path` (fsynced unless not `durable`); its path, to rename over `path`."""
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "xb") as f:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    f.write(data)
                else:
                    shutil.copyfileobj(data, f, COPY_CHUNK)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        return tmp

    @_reachable
    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; ObjectNotFound if there are none."""
        path = self._path(key)
        try:
            if self.protocol == "file":  # plain file I/O: a third of fsspec's cost on every cache look-up
                with open(path, "rb") as f:
                    return f.read()
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    @_reachable
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key` (StoreUnavailable when the backend cannot say)."""
        try:
            if self.protocol == "file":
                return stat.S_ISREG(os.stat(self._path(key)).st_mode)
            return self.fs.info(self._path(key))["type"] == "file"
        except FileNotFoundError:
            return False

    @_reachable
    def delete(self, key: str) -> None:
        """Remove the object under `key`, if any."""
        path = self._path(key)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    @_reachable
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of all objects below `prefix` (a key or key/ path; "" lists everything)."""
        base = self._path(prefix.removesuffix("/")) if prefix else self._root
        start = len(self._root) + 1
        keys = (p[start:] for p in self.fs.find(base))
        return sorted(k for k in keys if _key_problem(k) is None)

    @_reachable
    def ping(self) -> None:
        """Raise if the store is unreachable (for s3: if the bucket does not exist)."""
        if self.protocol == "file" and not os.path.isdir(self._root):
            raise FileNotFoundError(f"store directory {self._root} does not exist")
        if self.protocol == "s3":
            self.fs.call_s3("head_bucket", Bucket=self._root.split("/", 1)[0])
