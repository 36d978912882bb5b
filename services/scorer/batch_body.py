"""A `/score/batch` body as a file (spooled to disk as it arrived), never whole in memory: its safetensors header
is checked without loading any tensor, and its pairs are written out as the canonical raw body (one uint8 tensor
`pairs` [N, 2, H, W, 3]) chunk by chunk — copied from a raw body, or decoded crop by crop from a JPEG one."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from tempfile import SpooledTemporaryFile
from typing import BinaryIO

from genview.store import COPY_CHUNK
from services.errors import ApiError
from services.uploads import spooled

MAX_HEADER = 1024 * 1024  # a safetensors header of a few tensors is tiny
ITEM_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
             "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a safetensors file: dtype, shape and its bytes' absolute offsets in the file."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


def _malformed(why: str) -> ApiError:
    return ApiError(400, "malformed_safetensors", f"the body is not a valid safetensors file: {why}")


def _spec(name: str, entry: object, base: int) -> TensorSpec:
    """The checked spec of the header entry `name` (offsets relative to the data section at `base`)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str) or entry["dtype"] not in ITEM_SIZE:
        raise _malformed(f"tensor {name!r} has no known dtype")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _malformed(f"tensor {name!r} has an invalid shape")
    nbytes = math.prod(shape) * ITEM_SIZE[entry["dtype"]]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] and offsets[1] - offsets[0] == nbytes):
        raise _malformed(f"tensor {name!r} has data offsets that do not match its shape")
    return TensorSpec(entry["dtype"], tuple(shape), base + offsets[0], base + offsets[1])


def read_header(src: BinaryIO) -> dict[str, TensorSpec]:
    """The tensors of the safetensors file `src` (read from its start; data not read); 400 JSON if malformed."""
    size = src.seek(0, 2)
    src.seek(0)
    if size == 0:
        raise ApiError(400, "empty_body", "the body is empty; send a safetensors file with a tensor 'pairs'")
    prefix = src.read(8)
    if len(prefix) < 8:
        raise _malformed("shorter than its 8-byte header length")
    (length,) = struct.unpack("<Q", prefix)
    if not 0 < length <= min(MAX_HEADER, size - 8):
        raise _malformed(f"header length {length} is out of range")
    try:
        header = json.loads(src.read(length))
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise _malformed(f"its header is not JSON ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise _malformed("its header is not a JSON object")
    specs = {name: _spec(name, entry, 8 + length) for name, entry in header.items() if name != "__metadata__"}
    if max((s.end for s in specs.values()), default=8 + length) != size:
        raise _malformed("its tensors do not end where the body ends")
    return specs


def check_batch_shape(n: int, h: int, w: int, max_pairs: int, max_side: int) -> None:
    """413/422 unless there are 1 to `max_pairs` pairs of images with each side 16 to `max_side`."""
    if not 1 <= n <= max_pairs:
        raise ApiError(413 if n > max_pairs else 422, "invalid_pairs",
                       f"'pairs' holds {n} pairs; 1 to {max_pairs} are accepted")
    if not (16 <= h <= max_side and 16 <= w <= max_side):
        raise ApiError(422, "invalid_pairs", f"images are {h}x{w}; each side must be 16 to {max_side}")


def read_span(src: BinaryIO, start: int, end: int) -> bytes:
    """Bytes `start:end` of `src`."""
    src.seek(start)
    return src.read(end - start)


def copy_span(src: BinaryIO, spec: TensorSpec) -> Iterator[bytes]:
    """The bytes of tensor `spec`, in chunks."""
    for at in range(spec.start, spec.end, COPY_CHUNK):
        yield read_span(src, at, min(at + COPY_CHUNK, spec.end))


def write_pairs(shape: tuple[int, ...], chunks: Iterable[bytes]) -> SpooledTemporaryFile:
    """A spooled safetensors file holding the uint8 tensor `pairs` of `shape` whose bytes are `chunks`, rewound."""
    nbytes = math.prod(shape)
    header = json.dumps({"pairs": {"dtype": "U8", "shape": list(shape), "data_offsets": [0, nbytes]}},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # as safetensors writes it: the data starts 8-byte aligned
    out = spooled()
    out.write(struct.pack("<Q", len(header)) + header)
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
    assert written == nbytes, f"wrote {written} of {nbytes} bytes of pairs"
    out.seek(0)
    return out
