"""ObjectStore contract on file://, memory:// and s3:// (moto server), plus keys and hashing."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from genview.settings import Settings
from genview.store import (
    InvalidKey,
    ObjectNotFound,
    ObjectStore,
    input_key,
    params_hash,
    basis_key,
    basis_version_key,
    current_basis_key,
    score_key,
    sha256_hex,
    validate_key,
    view_key,
    view_meta_key,
)

BAD_KEYS = ["../etc/passwd", "/abs", "a//b", "a/../b", "a\\b", "", "x" * 600, "views/%2e%2e/x",
            "a/", ".hidden", "a/b c", "a/ü"]
GOOD_KEYS = ["a", "inputs/" + "0" * 64, "views/abc/def/0.png", "pca/dinov2-vitb14.safetensors",
             "A.b_c-d/e"]


@pytest.fixture(params=["file", "memory", "s3"])
def store(request, tmp_path) -> ObjectStore:
    """An empty store on each backend."""
    if request.param == "file":
        return ObjectStore(f"file://{tmp_path / 'store'}")
    if request.param == "memory":
        return ObjectStore(f"memory://test-{uuid.uuid4().hex}")
    return ObjectStore(request.getfixturevalue("s3_bucket"),
                       endpoint_url=request.getfixturevalue("s3_endpoint"))


def test_round_trip(store):
    key = view_key("a" * 64, "b" * 32, 0)
    assert store.put(key, b"\x00png-bytes\xff") is True
    assert store.get(key) == b"\x00png-bytes\xff"


def test_write_once_and_overwrite(store):
    assert store.put("inputs/x", b"first") is True
    assert store.put("inputs/x", b"second") is False
    assert store.get("inputs/x") == b"first"
    assert store.put("inputs/x", b"third", overwrite=True) is True
    assert store.get("inputs/x") == b"third"


def test_put_many_writes_every_object_write_once_and_raises_on_a_bad_key(store):
    objects = {f"views/many/{i}.png": bytes([i]) * (i + 1) for i in range(5)}
    store.put("views/many/0.png", b"kept")
    assert store.put_many(objects) == set(objects) - {"views/many/0.png"}  # the keys it wrote
    assert {k: store.get(k) for k in objects} == {**objects, "views/many/0.png": b"kept"}
    with pytest.raises(InvalidKey):
        store.put_many({"views/many/5.png": b"x", "../escape": b"y"})


def test_exists_get_missing_and_delete(store):
    assert not store.exists("inputs/y")
    with pytest.raises(ObjectNotFound):
        store.get("inputs/y")
    store.put("inputs/y", b"data")
    assert store.exists("inputs/y")
    assert not store.exists("inputs")  # a prefix is not an object
    store.delete("inputs/y")
    assert not store.exists("inputs/y")
    with pytest.raises(ObjectNotFound):
        store.get("inputs/y")
    store.delete("inputs/y")  # deleting a missing object is fine


def test_list(store):
    keys = ["views/s1/p1/1.png", "views/s1/p1/0.png", "views/s1/p1/meta.json",
            "views/s1/p2/0.png", "views/s10/p1/0.png", "inputs/s1"]
    for k in keys:
        store.put(k, b"x")
    assert store.list() == sorted(keys)
    assert store.list("views/s1") == sorted(k for k in keys if k.startswith("views/s1/"))
    assert store.list("views/s1/") == store.list("views/s1")
    assert store.list("views/s1/p1") == ["views/s1/p1/0.png", "views/s1/p1/1.png",
                                         "views/s1/p1/meta.json"]
    assert store.list("nothing/here") == []


def test_ping(store):
    store.ping()


def test_bad_keys_rejected_everywhere(store):
    for key in BAD_KEYS:
        for call in (lambda: store.put(key, b"x"), lambda: store.get(key),
                     lambda: store.exists(key), lambda: store.delete(key)):
            with pytest.raises(InvalidKey):
                call()
        if key and key != "a/":  # "" lists everything; a trailing "/" is allowed on a prefix
            with pytest.raises(InvalidKey):
                store.list(key)
    assert store.list() == []


def test_good_keys_accepted(store):
    for key in GOOD_KEYS:
        assert validate_key(key) == key
        store.put(key, key.encode())
        assert store.get(key) == key.encode()


def test_validate_key_messages():
    with pytest.raises(InvalidKey, match="'..'"):
        validate_key("a/../b")
    with pytest.raises(InvalidKey, match="empty segment"):
        validate_key("a//b")
    with pytest.raises(InvalidKey, match="backslash"):
        validate_key("a\\b")
    with pytest.raises(InvalidKey, match="longer than 512"):
        validate_key("x" * 600)
    assert issubclass(InvalidKey, ValueError) and issubclass(ObjectNotFound, KeyError)


def test_key_builders():
    sha = sha256_hex(b"img")
    assert input_key(sha) == f"inputs/{sha}"
    assert view_key(sha, "p" * 32, 3) == f"views/{sha}/{'p' * 32}/3.png"
    assert view_key(sha, "p" * 32, 3, "webp") == f"views/{sha}/{'p' * 32}/3.webp"
    assert view_meta_key(sha, "ph") == f"views/{sha}/ph/meta.json"
    assert basis_key("dinov2", "ab" * 8) == f"bases/dinov2/{'ab' * 8}.safetensors"
    assert basis_version_key("t1", "dinov2", "ab" * 8) == f"tenants/t1/bases/dinov2/{'ab' * 8}.json"
    assert current_basis_key("default", "dinov2") == "tenants/default/current-basis/dinov2.json"
    assert score_key("t1", sha, "ph") == f"scores/t1/{sha}/ph.json"
    with pytest.raises(InvalidKey):
        input_key("../x")


def test_params_hash():
    a = params_hash({"seed": 1, "steps": 20, "prompt": "é", "noise": {"level": "auto", "x": 1}})
    b = params_hash({"noise": {"x": 1, "level": "auto"}, "prompt": "é", "steps": 20, "seed": 1})
    canonical = '{"noise":{"level":"auto","x":1},"prompt":"é","seed":1,"steps":20}'  # sorted, compact, UTF-8
    assert a == b == sha256_hex(canonical.encode("utf-8"))[:32]
    changed = {"seed": 2, "steps": 20, "prompt": "é", "noise": {"level": "auto", "x": 1}}
    assert params_hash(changed) != a
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_file_writes_are_atomic(tmp_path):
    store = ObjectStore(str(tmp_path))
    a, b = b"A" * (2 << 20), b"B" * (2 << 20)
    store.put("inputs/big", a)
    done = threading.Event()
    seen, errors = [], []

    def write():
        try:
            for i in range(40):
                store.put("inputs/big", b if i % 2 == 0 else a, overwrite=True)
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        data = store.get("inputs/big")
        seen.append(data == a or data == b)
    writer.join()
    assert not errors
    assert seen and all(seen)
    files = [os.path.relpath(os.path.join(d, f), tmp_path)
             for d, _, names in os.walk(tmp_path) for f in names]
    assert files == [os.path.join("inputs", "big")]


def test_file_url_forms(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = ObjectStore("file://./genview-data")
    assert rel.protocol == "file" and rel.url == f"file://{tmp_path / 'genview-data'}"
    assert (tmp_path / "genview-data").is_dir()
    rel.put("inputs/a", b"1")
    assert ObjectStore(str(tmp_path / "genview-data")).get("inputs/a") == b"1"
    assert ObjectStore(f"file://{tmp_path}/genview-data").list() == ["inputs/a"]
    with pytest.raises(ValueError):
        ObjectStore("ftp://host/x")


def test_memory_stores_are_namespaced():
    one = ObjectStore(f"memory://a{uuid.uuid4().hex}")
    two = ObjectStore(f"memory://b{uuid.uuid4().hex}")
    prefix_of_one = ObjectStore(one.url[:-1])  # memory://aXXX… is not inside memory://aXX…
    one.put("inputs/x", b"1")
    assert one.protocol == "memory"
    assert not two.exists("inputs/x") and two.list() == []
    assert prefix_of_one.list() == []
    assert ObjectStore(one.url).get("inputs/x") == b"1"


def test_s3_store(s3_bucket, s3_endpoint, monkeypatch):
    store = ObjectStore(s3_bucket + "/", endpoint_url=s3_endpoint)
    assert store.protocol == "s3" and store.url == s3_bucket
    monkeypatch.setenv("GENVIEW_STORE_URL", s3_bucket)
    monkeypatch.setenv("GENVIEW_S3_ENDPOINT_URL", s3_endpoint)
    from_settings = ObjectStore.from_settings(Settings())
    store.put("inputs/z", b"z")
    assert from_settings.exists("inputs/z") and from_settings.get("inputs/z") == b"z"


def test_s3_ping_missing_bucket(s3_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with pytest.raises(OSError):  # s3fs: FileNotFoundError
        ObjectStore("s3://bucket-that-does-not-exist/x", endpoint_url=s3_endpoint).ping()


def test_put_many_publishes_nothing_when_one_object_fails(tmp_path):
    store = ObjectStore(f"file://{tmp_path / 'store'}")
    store.put("views/blocker", b"a file where a folder is needed")
    with pytest.raises(OSError):
        store.put_many({"views/ok.png": b"x", "views/blocker/0.png": b"y", "views/meta.json": b"{}"},
                       last="views/meta.json")
    assert store.list("views") == ["views/blocker"]
    assert not [p for p in (tmp_path / "store" / "views").iterdir() if p.name.endswith(".tmp")]  # no staged leftovers
