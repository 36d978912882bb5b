"""Content-addressed object store over fsspec: local files, S3 (or MinIO) and memory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import fsspec
from fsspec.implementations.local import LocalFileSystem

MAX_KEY_LEN = 512
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class ObjectNotFound(KeyError):
    """No object is stored under the key."""


class InvalidKey(ValueError):
    """The key is not allowed (see `validate_key`)."""


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


def pca_key(encoder_id: str) -> str:
    """Key of the PCA basis of an encoder."""
    return validate_key(f"pca/{encoder_id}.safetensors")


def score_body_key(pair_sha: str) -> str:
    """Key of a scoring job's pairs body: transient (the worker deletes it once scored), never under `inputs/`."""
    return validate_key(f"score-bodies/{pair_sha}")


def score_key(pair_sha: str, phash: str) -> str:
    """Key of the scores of an (original, view) pair under parameters `phash`."""
    return validate_key(f"scores/{pair_sha}/{phash}.json")


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

    def put(self, key: str, data: bytes, *, overwrite: bool = False, durable: bool = True) -> bool:
        """Write `data` atomically unless the object exists and not `overwrite`; True if written.
        `durable=False` skips the fsync of a local file (transient objects)."""
        path = self._path(key)
        if not overwrite and self.exists(key):
            return False
        if self.protocol == "file":
            self._write_local(path, data, durable)
        else:
            self.fs.pipe_file(path, bytes(data))
        return True

    def put_many(self, objects: dict[str, bytes]) -> None:
        """`put` several objects at once (their fsyncs or S3 requests overlap); all are written on return."""
        if len(objects) < 2:
            for key, data in objects.items():
                self.put(key, data)
            return
        with ThreadPoolExecutor(min(8, len(objects)), thread_name_prefix="store-put") as pool:
            for future in [pool.submit(self.put, key, data) for key, data in objects.items()]:
                future.result()

    @staticmethod
    def _write_local(path: str, data: bytes, durable: bool = True) -> None:
        """Write a temp file next to `path`, then rename it over `path`."""
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; ObjectNotFound if there are none."""
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""
        return self.fs.isfile(self._path(key))

    def delete(self, key: str) -> None:
        """Remove the object under `key`, if any."""
        path = self._path(key)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of all objects below `prefix` (a key or key/ path; "" lists everything)."""
        base = self._path(prefix.removesuffix("/")) if prefix else self._root
        start = len(self._root) + 1
        keys = (p[start:] for p in self.fs.find(base))
        return sorted(k for k in keys if _key_problem(k) is None)

    def ping(self) -> None:
        """Raise if the store is unreachable (for s3: if the bucket does not exist)."""
        if self.protocol == "file" and not os.path.isdir(self._root):
            raise FileNotFoundError(f"store directory {self._root} does not exist")
        if self.protocol == "s3":
            self.fs.call_s3("head_bucket", Bucket=self._root.split("/", 1)[0])
