"""Shard format (WebDataset tars + parquet index) and the trainer's ShardViewSource, split by rank and worker."""

from __future__ import annotations

import pytest
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from genview.batch.shards import (ORIGINAL, RECORD, SHARD_NAME, ShardIndex, ShardOutput, ShardRecord, ShardSample,
                                  read_index, read_sample_at, view_field)
from genview.batch.interop import gallery_rows, shard_views
from genview.official import export_official
from genview.gallery import HEADER_H, PAD, grid_size, render_grid
from genview.schemas import GenerationParams
from genview.training.pairs import Crop
from genview.training.shards import ShardViewSource
from genview.training.views import SourceNotReady
from harness.images import png_bytes

PARAMS = GenerationParams(model="tiny", noise_policy="adaptive", basis="abc", num_views=2, steps=2, size=32)


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float()


CROPS = [Crop(_as_float, "original"), Crop(_as_float, "generated")]


def sample(position: int, with_original: bool = True) -> ShardSample:
    record = ShardRecord(key=f"n{position % 3}/img{position}.png", sha256=f"{position:064x}", fg_ratio=0.1 * (position % 10),
                         fg_basis="fitted", noise_level=100 * (position % 5), seeds=[position, position + 1], basis_id="abc",
                         params=PARAMS, params_hash=PARAMS.hash, views=[view_field(0, "png"), view_field(1, "png")])
    original = png_bytes(24, 20, seed=position) if with_original else None
    return ShardSample(position, record, original, [png_bytes(32, 32, seed=1000 + position), png_bytes(32, 32, seed=2000 + position)],
                       png_bytes(32, 32, seed=3000 + position))


def write(tmp_path, shards: int, per_shard: int, with_original: bool = True) -> ShardOutput:
    out = ShardOutput(str(tmp_path / "shards"))
    for s in range(shards):
        out.write_shard(s, [sample(s * per_shard + i, with_original) for i in range(per_shard)])
    out.merge_index()
    return out


def test_webdataset_reads_every_sample_and_the_index_points_at_it(tmp_path):
    out = write(tmp_path, shards=3, per_shard=4)
    samples = list(wds.WebDataset(out.shard_urls(), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(12)]
    for s in samples:
        record = ShardRecord.model_validate_json(s[RECORD])
        position = int(s["__key__"])
        assert s[ORIGINAL] == png_bytes(24, 20, seed=position)
        assert s[record.views[1]] == png_bytes(32, 32, seed=2000 + position)
        assert record.params.hash == record.params_hash
    index = read_index(out.url)
    assert index.num_rows == 12 and index.column("key").to_pylist() == sorted(index.column("key").to_pylist())
    row = ShardIndex(index).lookup("n1/img7.png")
    assert row["shard"] == SHARD_NAME.format(1) and row["noise_level"] == 200 and row["sample"] == "000000007"
    members = read_sample_at(out.url, row["shard"], row["offset"])
    assert members[view_field(0, "png")] == png_bytes(32, 32, seed=1007)
    assert set(members) == {ORIGINAL, RECORD, "fg.png", "view0.png", "view1.png"}
    assert ShardIndex(index).lookup("n1/nothing.png") is None


def test_a_shard_is_complete_only_once_its_tar_exists(tmp_path):
    out = ShardOutput(str(tmp_path / "shards"))
    assert not out.done(0)
    out.write_shard(0, [sample(0)])
    assert out.done(0) and not out.done(1)
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.startswith(".")]  # no temporary left


def _indices(source: ShardViewSource, workers: int) -> list[int]:
    loader = DataLoader(source, batch_size=None, num_workers=workers, multiprocessing_context="fork" if workers else None)
    return [index for _, index, _, _ in loader]


def test_ranks_and_loader_workers_see_disjoint_parts(tmp_path, monkeypatch):
    """2 simulated ranks × 2 loader workers over 8 shards: disjoint, together everything, equal lengths."""
    out = write(tmp_path, shards=8, per_shard=3)
    seen = {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        source = ShardViewSource(out.url, CROPS, loader_workers=2, shuffle_buffer=4, seed=5)
        seen[rank] = _indices(source, workers=2)
        assert len(seen[rank]) == len(source) == 12
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(24))
    source.set_epoch(1)  # another epoch: another shard order, same split rule
    assert sorted(_indices(source, workers=2)) != sorted(seen[1])


def test_uneven_shards_are_capped_so_ranks_stay_in_step(tmp_path, monkeypatch):
    out = write(tmp_path, shards=3, per_shard=2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    lengths = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        source = ShardViewSource(out.url, CROPS, shuffle_buffer=0)
        lengths.append(len(_indices(source, workers=0)))
    assert lengths == [2, 2]  # one rank holds 2 shards, the other 1: both yield one shard's worth
    assert len(ShardViewSource(out.url, CROPS, batch_size=3)) == 0  # whole batches only
    with pytest.raises(SourceNotReady, match="3 shards cannot feed 2 ranks x 2 loader workers"):
        len(ShardViewSource(out.url, CROPS, loader_workers=2))


def test_pairs_are_original_and_generated_view(tmp_path):
    out = write(tmp_path, shards=1, per_shard=2, with_original=False)
    data_root = tmp_path / "images"
    for i in range(2):
        path = data_root / sample(i).record.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(24, 20, seed=i))
    (crops, index, generated, fell_back), _ = list(ShardViewSource(out.url, CROPS, data_root=str(data_root),
                                                                   shuffle_buffer=0))
    assert index == 0 and generated and not fell_back
    assert crops[0].shape == (3, 20, 24) and crops[1].shape == (3, 32, 32)  # original, then the generated view
    items = list(ShardViewSource(out.url, CROPS, alpha=0.0, data_root=str(data_root)))
    assert all(not g and c[1].shape == (3, 20, 24) for c, _, g, _ in items)  # α = 0: plain SSL


def test_no_shards_is_a_clear_error(tmp_path):
    with pytest.raises(SourceNotReady, match="generate-dataset --engine ray"):
        ShardViewSource(str(tmp_path / "empty"), CROPS)


def test_export_official_from_shards(tmp_path):
    out = write(tmp_path, shards=2, per_shard=3)
    n = export_official(shard_views(out.url), str(tmp_path / "official"))
    assert n == 6
    written = sorted(str(p.relative_to(tmp_path / "official" / "train_variations"))
                     for p in (tmp_path / "official").rglob("*.png"))
    assert written == sorted(sample(i).record.key for i in range(6))
    assert (tmp_path / "official" / "train_variations" / "n1" / "img4.png").read_bytes() == png_bytes(32, 32, seed=1004)
    lines = (tmp_path / "official" / "fg_ratios.txt").read_text().splitlines()
    assert "n1/img4.png 0.4" in lines and len(lines) == 6


def test_gallery_draws_from_shards(tmp_path):
    out = write(tmp_path, shards=2, per_shard=3)
    rows, store, originals = gallery_rows(out.url, limit=4)
    assert [r["path"] for r in rows] == [sample(i).record.key for i in range(4)]
    assert store.get(rows[2]["views"][1]) == png_bytes(32, 32, seed=2002)
    sheet = render_grid(rows, store, lambda row: originals[row["path"]], thumb=32)
    assert sheet.size == grid_size(4, 2, 32)
    tile = sheet.crop((PAD, HEADER_H, PAD + 32, HEADER_H + 32)).convert("RGB")
    assert len(set(tile.tobytes()[i:i + 3] for i in range(0, 32 * 32 * 3, 3))) > 50  # the original's random pixels, not a grey "missing" tile
