"""Shards to the official repository's layout, and shard samples as gallery rows (no object store involved)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

from genview.batch.shards import FG_MAP, ORIGINAL, RECORD, ShardRecord, iter_samples
from genview.official import OfficialView
from genview.store import ObjectStore, fg_map_key, view_key


def shard_views(shards: str) -> Iterator[OfficialView]:
    """The shards' images for `export_official` (one pass over the shards)."""
    for sample in iter_samples(shards):
        record = ShardRecord.model_validate_json(sample[RECORD])
        yield OfficialView(record.key, record.fg_ratio, lambda data=sample[record.views[0]]: data)


def gallery_rows(shards: str, limit: int) -> tuple[list[dict], ObjectStore, dict[str, bytes]]:
    """The first `limit` samples as gallery rows, a memory store holding their views and foreground maps,
    and their originals by key: `render_grid(rows, store, lambda row: originals[row["path"]])`."""
    store = ObjectStore(f"memory://gallery-{uuid.uuid4().hex}")
    rows, originals = [], {}
    for sample in itertools.islice(iter_samples(shards), limit):
        record = ShardRecord.model_validate_json(sample[RECORD])
        views = []
        for i, name in enumerate(record.views):
            views.append(view_key(record.sha256, record.params_hash, i, name.rsplit(".", 1)[1]))
            store.put(views[-1], sample[name])
        fg_map = fg_map_key(record.sha256, record.params_hash)
        store.put(fg_map, sample[FG_MAP])
        if ORIGINAL in sample:
            originals[record.key] = sample[ORIGINAL]
        rows.append({"path": record.key, "fg_ratio": record.fg_ratio, "noise_level": record.noise_level,
                     "views": views, "fg_map": fg_map})
    return rows, store, originals
