"""genview/images.py against crafted inputs: shape limits on the header, hostile bytes → ImageRejected (never
another exception), reduced-scale decoding of large JPEGs, and bounded memory measured in a child process."""

from __future__ import annotations

import io
import json
import random
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image

from genview.images import MAX_ASPECT, MIN_SIDE, ImageRejected, load_rgb, validate_image
from harness.images import png_bytes

MAX_PIXELS = 40_000_000


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def crafted_png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A grey PNG built chunk by chunk (tiny even for huge sizes: the rows compress to almost nothing)."""
    rows = zlib.compress(b"".join(b"\x00" + b"\x00" * width for _ in range(height)), 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + extra
            + _chunk(b"IDAT", rows) + _chunk(b"IEND", b""))


def ztxt_bomb() -> bytes:
    """A 16×16 PNG with a zTXt chunk that inflates to 200 MB."""
    return crafted_png(16, 16, _chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * (200 << 20), 9)))


IPTC_10_BYTES = b"\x1c\x02\x00\x00\x02\x00\x02AB\x00"


def jpeg(width: int, height: int, orientation: int | None = None) -> bytes:
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, exif=exif.tobytes())
    return buf.getvalue()


CRAFTED = {
    "100000x1": (crafted_png(100_000, 1), "image_too_small"),
    "1x100000": (crafted_png(1, 100_000), "image_too_small"),
    "20000x100": (crafted_png(20_000, 100), "extreme_aspect_ratio"),
    "4x4": (crafted_png(4, 4), "image_too_small"),
    "ztxt-bomb": (ztxt_bomb(), "undecodable_image"),
    "iptc-10-bytes": (IPTC_10_BYTES, "undecodable_image"),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_inputs_are_rejected_with_a_4xx(name):
    data, code = CRAFTED[name]
    for decode in (validate_image, load_rgb):
        with pytest.raises(ImageRejected) as caught:
            decode(data, MAX_PIXELS)
        assert (caught.value.code, caught.value.status) == (code, 400), name


def test_shape_limits_are_inclusive():
    short = MIN_SIDE
    edge = crafted_png(short * MAX_ASPECT, short)
    assert validate_image(edge, MAX_PIXELS).width == short * MAX_ASPECT
    assert load_rgb(crafted_png(short, short), MAX_PIXELS).size == (short, short)
    with pytest.raises(ImageRejected, match="long side"):
        validate_image(crafted_png(short * MAX_ASPECT + 1, short), MAX_PIXELS)
    with pytest.raises(ImageRejected) as caught:
        load_rgb(crafted_png(3000, 3000), 1_000_000)
    assert (caught.value.status, caught.value.code) == (413, "too_many_pixels")


def test_mutated_images_raise_only_image_rejected():
    rng = random.Random(0)
    seeds = [png_bytes(64, 48, seed=1), jpeg(64, 48, orientation=6)]
    outcomes = {"ok": 0, "rejected": 0}
    for i in range(400):
        data = bytearray(seeds[i % 2])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[: rng.randint(8, len(data))]) if i % 3 == 0 else bytes(data)
        try:
            load_rgb(cut, MAX_PIXELS)
            validate_image(cut, MAX_PIXELS)
            outcomes["ok"] += 1
        except ImageRejected as exc:
            assert 400 <= exc.status < 500
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 50 and outcomes["ok"] > 0


def test_large_jpeg_is_decoded_at_a_reduced_scale_and_stays_upright():
    data = jpeg(4000, 3000)
    assert load_rgb(data, MAX_PIXELS).size == (4000, 3000)
    small = load_rgb(data, MAX_PIXELS, min_side=224)
    assert 224 <= small.height < 448 and small.width == pytest.approx(small.height * 4 / 3, abs=2)
    rotated = load_rgb(jpeg(800, 600, orientation=6), MAX_PIXELS, min_side=100)  # EXIF: rotate 90°
    assert rotated.mode == "RGB" and rotated.width < rotated.height and min(rotated.size) >= 100
    png = load_rgb(png_bytes(1000, 800), MAX_PIXELS, min_side=224)  # other formats: an integer box reduce
    assert png.size == (334, 267)
    assert load_rgb(png_bytes(300, 200), MAX_PIXELS, min_side=224).size == (300, 200)  # never below min_side


MEASURE = """
import json, resource, sys
from genview.images import ImageRejected, load_rgb, validate_image
files = json.loads(sys.argv[1])
def peak_mb(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
load_rgb(open(files["warm"], "rb").read(), 40_000_000, min_side=224)
out = {}
for name, path in files.items():
    data = open(path, "rb").read()
    before = peak_mb()
    for decode in (validate_image, lambda d, m: load_rgb(d, m, min_side=224)):
        try:
            decode(data, 40_000_000)
        except ImageRejected:
            pass
    out[name] = peak_mb() - before
print(json.dumps(out))
"""


def test_hostile_and_large_inputs_keep_memory_bounded(tmp_path):
    files = {"warm": png_bytes(64, 64), "100000x1": CRAFTED["100000x1"][0], "ztxt-bomb": CRAFTED["ztxt-bomb"][0],
             "20000x100": CRAFTED["20000x100"][0], "jpeg-6000x4000": jpeg(6000, 4000)}
    paths = {}
    for name, data in files.items():
        paths[name] = str(tmp_path / name)
        (tmp_path / name).write_bytes(data)
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(paths)], capture_output=True, text=True,
                          timeout=120, check=True)
    growth_mb = json.loads(done.stdout)
    assert max(growth_mb.values()) < 40, growth_mb  # a full decode of the JPEG alone would take 72 MB


def test_reduced_scale_validation_still_finds_a_truncated_jpeg():
    data = jpeg(2000, 1500)
    assert (validate_image(data, MAX_PIXELS).width, validate_image(data, MAX_PIXELS).height) == (2000, 1500)
    for cut in (len(data) // 2, len(data) - 10):
        with pytest.raises(ImageRejected) as caught:
            validate_image(data[:cut], MAX_PIXELS)
        assert caught.value.code == "corrupt_image"
