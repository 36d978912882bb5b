"""`/score/batch` accepts JPEG-encoded crops (`pairs_jpeg` + `lengths`) as well as raw uint8 pairs."""

from __future__ import annotations

import io

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save

from genview.queue import MemoryJobQueue
from genview.settings import Settings
from genview.store import ObjectStore, score_body_key
from services.scorer.app import create_app
from services.scorer.pairs import decode_pairs, encode_pairs


def _jpeg(seed: int, side: int = 64) -> bytes:
    y, x = np.mgrid[0:side, 0:side]
    img = np.stack([(x * 4 + seed) % 256, (y * 4) % 256, ((x + y) * 2) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _body(files: list[bytes], lengths=None) -> bytes:
    data = torch.frombuffer(bytearray(b"".join(files)), dtype=torch.uint8)
    lengths = lengths if lengths is not None else torch.tensor([len(f) for f in files], dtype=torch.int64).view(-1, 2)
    return save({"pairs_jpeg": data, "lengths": lengths})


def test_jpeg_pairs_become_the_same_uint8_pairs_and_are_smaller(tmp_path):
    settings = Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/s", score_timeout_s=0.05)
    queue, store = MemoryJobQueue("j"), ObjectStore(settings.store_url)
    client = TestClient(create_app(settings, queue, store))
    files = [_jpeg(i) for i in range(4)]
    body = _body(files)
    r = client.post("/score/batch", params={"basis": "per-image"}, content=body)
    assert r.status_code == 202, r.text
    expected = torch.from_numpy(np.stack([np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in files]))
    payload = queue.get(r.json()["job_id"]).payload
    stored = decode_pairs(store.get(score_body_key(payload["tenant"], payload["body"])))
    assert torch.equal(stored, expected.view(2, 2, 64, 64, 3))
    assert len(body) * 5 < len(encode_pairs(expected.view(2, 2, 64, 64, 3)))


def test_bad_jpeg_pairs_get_4xx_json(tmp_path):
    settings = Settings(model="tiny", scorer_model="tiny", store_url=f"file://{tmp_path}/s")
    client = TestClient(create_app(settings, MemoryJobQueue("b"), ObjectStore(settings.store_url)))
    files = [_jpeg(0), _jpeg(1)]
    cases = [_body(files, torch.tensor([[1, 2]])), _body([files[0], b"not a jpeg at all"]),
             _body([_jpeg(0, 64), _jpeg(1, 32)])]
    for body in cases:
        r = client.post("/score/batch", params={"basis": "per-image"}, content=body)
        assert r.status_code in (400, 422) and set(r.json()) == {"error", "detail"}, r.text


def test_client_jpeg_body_decodes_to_the_pairs_within_jpeg_error():
    """What the trainer sends to the scorer service (`ScorerClient.score_batch(..., jpeg_quality=95)`)."""
    from genview.client import jpeg_pairs_body
    from services.scorer.pairs import batch_pairs

    smooth = torch.linspace(0, 255, 64).view(1, 1, 1, 64, 1).expand(3, 2, 64, 64, 3).to(torch.uint8).contiguous()
    body = jpeg_pairs_body(smooth, 95)
    with batch_pairs(io.BytesIO(body), 8, 512, 10**6) as canonical:
        decoded = decode_pairs(canonical.read())
    assert decoded.shape == smooth.shape and decoded.dtype == torch.uint8
    assert (decoded.float() - smooth.float()).abs().mean() < 2.0
    assert len(body) * 5 < len(encode_pairs(smooth))
