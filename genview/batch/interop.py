"""Shards to the official repository's layout, and shard samples as gallery rows (no object store involved)."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

from genview.batch.shards import FG_MAP, ORIGINAL, RECORD, ShardRecord, iter_samples
from genview.store import ObjectStore, fg_map_key, view_key


def export_official(shards: str, out_dir: str) -> int:
    """Write `train_variations/<key>` (first view) and `fg_ratios.txt` as the official training configs expect."""
    root = Path(out_dir)
    ratios = []
    for sample in iter_samples(shards):
        record = ShardRecord.model_validate_json(sample[RECORD])
        target = root / "train_variations" / record.key
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(sample[record.views[0]])
        tmp.replace(target)
        ratios.append((record.key, record.fg_ratio))
    (root / "fg_ratios.txt").write_text("".join(f"{key} {ratio}\n" for key, ratio in sorted(ratios)))
    return len(ratios)


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
