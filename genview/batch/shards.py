"""The shard format: WebDataset tars of generated views and a parquet index with one row per image.

A shard `shard-NNNNNN.tar` holds, per image (WebDataset sample `NNNNNNNNN`, the image's position in the
dataset's shuffled order): `original` (the input's bytes, unless written without), `view0.png` … (the
generated views, encoded exactly as the generator service stores them), `fg.png` (foreground map) and `json`
(a `ShardRecord`: the original's key, fg ratio, noise level, seeds, basis id, parameters). Next to it,
`shard-NNNNNN.parquet` holds the shard's index rows; the tar is written last, so a shard whose tar exists is
complete. `index.parquet` merges the parts: key (path relative to the images folder), sample, shard, byte
offset of the sample in the shard, fg ratio, noise level, sha256.
"""

from __future__ import annotations

import bisect
import io
import os
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from genview.schemas import GenerationParams, ViewRecord

SHARD_NAME = "shard-{:06d}.tar"
INDEX_NAME = "index.parquet"
ORIGINAL, FG_MAP, RECORD = "original", "fg.png", "json"
INDEX_SCHEMA = pa.schema([("key", pa.string()), ("sample", pa.string()), ("shard", pa.string()),
                          ("offset", pa.int64()), ("fg_ratio", pa.float32()), ("noise_level", pa.int16()),
                          ("sha256", pa.string())])


def view_field(index: int, ext: str) -> str:
    """The member suffix of view `index` of a sample (`view0.png`)."""
    return f"view{index}.{ext}"


def sample_key(position: int) -> str:
    """The WebDataset key of the image at `position` in the dataset's order (no dots, sorts by position)."""
    return f"{position:09d}"


def part_name(shard_name: str) -> str:
    """The index part written next to a shard."""
    return shard_name.removesuffix(".tar") + ".parquet"


class ShardRecord(ViewRecord):
    """The JSON member of a sample: where the image came from and how its views were made."""

    key: str  # path of the original relative to the images folder
    sha256: str
    seeds: list[int]
    params: GenerationParams
    params_hash: str
    views: list[str]  # member suffixes of the views, in order


@dataclass
class ShardSample:
    """One image's members, ready to write."""

    position: int
    record: ShardRecord
    original: bytes | None
    views: list[bytes]
    fg_map: bytes

    def members(self) -> dict[str, bytes]:
        out = {RECORD: self.record.model_dump_json().encode(), FG_MAP: self.fg_map}
        out.update(zip(self.record.views, self.views))
        if self.original is not None:
            out[ORIGINAL] = self.original
        return out


class ShardOutput:
    """The shard folder (local path or fsspec URL): names, completeness, atomic writes, the merged index."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = "file" in self.fs.protocol

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def done(self, shard: int) -> bool:
        """Whether shard `shard` was written completely (its tar, written last, exists)."""
        return self.fs.exists(self.path(SHARD_NAME.format(shard)))

    def _publish(self, local_file: str, name: str) -> None:
        """Move a finished local file to `name` atomically (rename locally, one upload to object stores)."""
        if self.local:
            os.chmod(local_file, 0o644)  # temporary files are private; a published shard is not
            os.replace(local_file, self.path(name))
        else:
            self.fs.put_file(local_file, self.path(name))
            os.unlink(local_file)

    def write_shard(self, shard: int, samples: Sequence[ShardSample]) -> pa.Table:
        """Write one shard (index part first, tar last); returns its index rows."""
        self.fs.makedirs(self.root, exist_ok=True)
        name = SHARD_NAME.format(shard)
        tmp_dir = self.root if self.local else None
        rows = []
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix=f".{name}.", delete=False) as tmp:
            with tarfile.open(fileobj=tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for s in samples:
                    key = sample_key(s.position)
                    rows.append({"key": s.record.key, "sample": key, "shard": name, "offset": tar.offset,
                                 "fg_ratio": s.record.fg_ratio, "noise_level": s.record.noise_level, "sha256": s.record.sha256})
                    for suffix, data in sorted(s.members().items()):
                        _add_member(tar, f"{key}.{suffix}", data)
        table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix=f".{name}.", suffix=".parquet", delete=False) as part:
            pq.write_table(table, part.name)
        self._publish(part.name, part_name(name))
        self._publish(tmp.name, name)
        return table

    def shard_urls(self) -> list[str]:
        """URLs of the complete shards, in order."""
        names = sorted(os.path.basename(p) for p in self.fs.glob(self.path("shard-*.tar")))
        return [f"{self.url}/{n}" for n in names]

    def merge_index(self) -> pa.Table:
        """Concatenate the index parts of the complete shards into `index.parquet` (sorted by key)."""
        parts = [pq.read_table(self.path(part_name(os.path.basename(u))), filesystem=self.fs, schema=INDEX_SCHEMA)
                 for u in self.shard_urls()]
        table = pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table()
        table = table.sort_by("key")
        with self.fs.open(self.path(INDEX_NAME), "wb") as f:
            pq.write_table(table, f)
        return table


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """One tar member with fixed metadata (the same bytes give the same shard)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0
    tar.addfile(info, io.BytesIO(data))


def open_shards(urls: Iterator[dict]) -> Iterator[dict]:
    """WebDataset stage: open each shard URL with fsspec (so s3://, gs://, memory:// … work as local paths)."""
    for sample in urls:
        with fsspec.open(sample["url"], "rb") as stream:
            yield {**sample, "stream": stream}


def iter_samples(url: str) -> Iterator[dict]:
    """Every WebDataset sample of the shard folder at `url`, in shard order (one process, no splitting)."""
    import webdataset as wds
    from webdataset.tariterators import group_by_keys, tar_file_expander

    return iter(wds.DataPipeline(wds.SimpleShardList(ShardOutput(url).shard_urls()), open_shards,
                                 tar_file_expander, group_by_keys))


def read_index(url: str) -> pa.Table:
    """The merged index of a shard folder."""
    fs, root = fsspec.core.url_to_fs(url.rstrip("/"))
    return pq.read_table(f"{root}/{INDEX_NAME}", filesystem=fs)


class ShardIndex:
    """Key → index row by binary search over the sorted key column (the index is written sorted)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.keys = table.column("key").to_pylist()

    def lookup(self, key: str) -> dict | None:
        i = bisect.bisect_left(self.keys, key)
        if i == len(self.keys) or self.keys[i] != key:
            return None
        return self.table.slice(i, 1).to_pylist()[0]


def read_sample_at(url: str, shard: str, offset: int) -> dict[str, bytes]:
    """The members of the sample starting at byte `offset` of a shard (one ranged read, no full scan)."""
    out: dict[str, bytes] = {}
    with fsspec.open(f"{url.rstrip('/')}/{shard}", "rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=f, mode="r|") as tar:
            key = None
            for member in tar:
                sample, suffix = member.name.split(".", 1)
                if key is not None and sample != key:
                    break
                key = sample
                out[suffix] = tar.extractfile(member).read()
    return out

