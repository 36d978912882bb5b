"""Trainer input from WebDataset shards (`--views-shards URL`): (original, generated view) pairs, streamed.

Shards are read sequentially with the `webdataset` library (local folders or any fsspec URL, e.g. s3://),
split first by distributed rank, then by data-loader worker; nothing is fetched per sample and nothing is
cached locally. Every (rank, worker) slot yields the same number of samples in every epoch, a multiple of
the batch size, so DDP ranks stay in step and `len(source) // batch_size` is the exact number of batches of a
rank: each slot gets at least ⌊shards / slots⌋ shards, and yields what the smallest that many hold. With
equal-sized shards and a number of shards divisible by ranks × workers, little is left out.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator, Sequence

import pyarrow.parquet as pq
import torch
import webdataset as wds
from torch.utils.data import IterableDataset
from webdataset.tariterators import group_by_keys, tar_file_expander
from webdataset.utils import pytorch_worker_info

from genview.batch.shards import INDEX_NAME, ORIGINAL, RECORD, ShardOutput, ShardRecord, open_shards
from genview.image_files import read_bytes
from genview.images import MAX_PIXELS
from genview.training.pairs import Crop, decode, positive_views, sample_seed, uses_generated
from genview.training.views import SourceNotReady


class ShardViewSource(IterableDataset):
    """([crops…], index, generated?, fell back?) per image, as PairDataset, from the shards at `url`.

    `index` is the image's position in the generation order (the sample key); `data_root` supplies the
    originals when the shards were written without them.
    """

    def __init__(self, url: str, crops: Sequence[Crop], alpha: float = 1.0, seed: int = 0, loader_workers: int = 0,
                 batch_size: int = 1, shuffle_buffer: int = 256, data_root: str | None = None,
                 max_pixels: int = MAX_PIXELS):
        out = ShardOutput(url)
        self.urls = out.shard_urls()
        if not self.urls:
            raise SourceNotReady(f"no shards (shard-*.tar) at {url}: run `genview generate-dataset --engine ray`")
        shards = pq.read_table(out.path(INDEX_NAME), columns=["shard"], filesystem=out.fs).column("shard")
        counts = Counter(shards.to_pylist())
        self.counts = {u: counts[u.rsplit("/", 1)[1]] for u in self.urls}
        self.crops, self.alpha, self.seed = list(crops), alpha, seed
        self.loader_workers, self.batch_size, self.shuffle_buffer = loader_workers, batch_size, shuffle_buffer
        self.data_root, self.max_pixels = data_root, max_pixels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[str]:
        """The shard order of this epoch: the same seeded permutation on every rank and worker."""
        order = list(self.urls)
        random.Random(f"{self.seed}:{self.epoch}").shuffle(order)
        return order

    def per_slot(self, world: int, workers: int) -> int:
        """Samples each (rank, worker) slot yields in any epoch (a multiple of the batch size)."""
        slots = world * workers
        if len(self.urls) < slots:
            raise SourceNotReady(f"{len(self.urls)} shards cannot feed {world} ranks x {workers} loader workers: "
                                 "write more shards (--images-per-shard) or use fewer workers")
        least = sum(sorted(self.counts.values())[:len(self.urls) // slots])
        return least // self.batch_size * self.batch_size

    def __len__(self) -> int:
        _, world, _, _ = pytorch_worker_info()
        workers = max(1, self.loader_workers)
        return self.per_slot(world, workers) * workers

    def samples(self) -> Iterator[dict]:
        """This slot's raw WebDataset samples (split by rank, then worker; shuffled in a small buffer)."""
        rank, world, worker, workers = pytorch_worker_info()
        pipeline = wds.DataPipeline(
            wds.SimpleShardList(self.epoch_order()), wds.split_by_node, wds.split_by_worker, open_shards,
            tar_file_expander, group_by_keys,
            wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer,
                        seed=f"{self.seed}:{self.epoch}:{rank}:{worker}") if self.shuffle_buffer else (lambda s: s))
        return itertools.islice(iter(pipeline), self.per_slot(world, workers))

    def read_original(self, key: str) -> bytes:
        """The original of a sample written without it, from `data_root`."""
        if self.data_root is None:
            raise SourceNotReady(f"the shards hold no original for {key}: give the images folder (data_root)")
        return read_bytes(f"{self.data_root.rstrip('/')}/{key}")

    def __iter__(self):
        for sample in self.samples():
            record = ShardRecord.model_validate_json(sample[RECORD])
            index = int(sample["__key__"])
            data = sample.get(ORIGINAL) or self.read_original(record.key)
            original = decode(data, self.max_pixels)
            rng = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            want = uses_generated(self.alpha, float(torch.rand((), generator=rng)))
            view = decode(sample[record.views[0]], self.max_pixels) if want else original
            torch.manual_seed(sample_seed(self.seed + 1, self.epoch, index))  # augmentations, per sample
            yield positive_views(original, view, self.crops), index, want, False
