"""The run's parts, built from its config in order: the view source and quality scorer (checked at once, their
PCA bases fitted on the training images when missing), the pair data, the model, its optimizer and schedule."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler

from genview.settings import get_settings
from genview.store import ObjectStore
from genview.training.pairs import PairDataset, crops_for
from genview.training.quality import QualityScorer
from genview.training.views import ManifestViewSource, ServiceViewSource, ViewCache, ViewPrefetcher, ViewSource
from trainer import dist
from trainer.config import RunConfig
from trainer.data import ImageSet
from trainer.methods import MethodConfig, SSLMethod, build_method
from trainer.optim import build_optimizer, build_schedule
from trainer.preflight import Placement, check_batches, shard_workers


@dataclass(frozen=True)
class PairData:
    """Where each step's pairs come from: the dataset (and its sampler), the view cache its prefetcher fills."""

    dataset: Dataset
    sampler: DistributedSampler | None  # None: shards split themselves by rank and loader worker
    prefetcher: ViewPrefetcher | None
    steps_per_epoch: int
    workers: int  # data loader processes (for shards: as many as hold a batch each)


@dataclass(frozen=True)
class Model:
    """The method (wrapped for DDP when distributed), its optimizer and learning-rate schedule."""

    module: torch.nn.Module
    method: SSLMethod
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler


def view_source(config: RunConfig) -> ViewSource | None:
    """The generator service or the store's pre-generated views, checked now so a wrong URL fails at once."""
    if config.generator_url:
        source = ServiceViewSource(config.generator_url, config.noise(), config.gen_steps, config.gen_size,
                                   config.gen_seed, retries=config.generator_retries)
    elif config.manifest:
        source = ManifestViewSource(config.manifest, config.data, ObjectStore.from_settings(get_settings()))
    else:
        return None
    source.check()
    return source


def fit_generator_basis(source: ViewSource | None, images: ImageSet, config: RunConfig, rank: int) -> None:
    """Adaptive views need the generator's fitted basis: rank 0 fits a missing one on the training images."""
    if not isinstance(source, ServiceViewSource):
        return
    if rank == 0 and source.needs_basis:
        source.fit_basis(images.paths, config.fit_num, config.seed)
    dist.barrier()
    source.check()  # every rank keys views on the basis now served


def quality_scorer(config: RunConfig, images: ImageSet, device: torch.device, rank: int) -> QualityScorer | None:
    """The quality scorer (`--scorer-url` or `--scorer local`) with its PCA basis: rank 0 fits a missing one on a
    sample of the training images (through the service, or in this process), the others then find it."""
    fit = {"fit_num": config.fit_num, "seed": config.seed}
    if config.scorer_url:
        build = partial(QualityScorer.service, config.scorer_url, fit_paths=images.paths, **fit)
    elif config.scorer == "local":
        from genview.models.scorer_encoder import ScorerEncoder

        settings = get_settings()
        encoder = ScorerEncoder.load(settings.scorer_model, str(device), settings.model_cache)
        build = partial(QualityScorer.in_process, encoder, ObjectStore.from_settings(settings), images.paths, **fit)
    else:
        return None
    scorer = build() if rank == 0 else None
    dist.barrier()
    return build() if scorer is None else scorer


def pair_data(place: Placement, images: ImageSet, source: ViewSource | None, method: MethodConfig) -> PairData:
    """Pairs by index over the listed images (views prefetched into a per-rank cache ahead of the sampler), or
    streamed from --views-shards."""
    config, crops = place.config, crops_for(method.crops)
    if config.views_shards:
        from genview.training.shards import ShardViewSource  # the [ray] extra: webdataset, pyarrow

        dataset = ShardViewSource(config.views_shards, crops, config.genview_prob, config.seed,
                                  loader_workers=config.workers, batch_size=place.batch, data_root=config.data)
        dataset.loader_workers = shard_workers(dataset, place.world, config.workers, place.batch)
        return PairData(dataset, None, None, _steps(len(dataset), place.batch), dataset.loader_workers)
    cache = ViewCache(place.folder.local / "view-cache", scope=str(place.rank)) if source else None
    dataset = PairDataset(images.paths, crops, source, cache, config.genview_prob, config.seed)
    sampler = DistributedSampler(dataset, place.world, place.rank, shuffle=True, seed=config.seed, drop_last=True)
    prefetcher = (ViewPrefetcher(source, images.paths, cache, _lookahead(config, place.batch),
                                 config.prefetch_concurrency, config.on_missing_view) if source else None)
    return PairData(dataset, sampler, prefetcher, _steps(len(sampler), place.batch), config.workers)


def _steps(per_rank: int, batch: int) -> int:
    check_batches(per_rank, batch)
    return per_rank // batch


def _lookahead(config: RunConfig, batch: int) -> int:
    """Samples fetched beyond training: the batches the data loader holds in flight, plus `--lookahead`."""
    in_flight = max(1, config.workers * 2) + 1  # DataLoader prefetch_factor 2 per worker, and the next one
    return (config.lookahead + in_flight) * batch


def model(place: Placement, method_config: MethodConfig, steps_per_epoch: int) -> Model:
    """The method on this rank's device (channels_last for conv backbones, DDP across ranks), its optimizer
    (lr scaled to the global batch) and warmup-cosine schedule over the whole run."""
    config, device = place.config, place.device
    method = build_method(method_config).to(device)
    if method_config.family == "resnet":
        method.channels_last()
    module: torch.nn.Module = method
    if dist.is_distributed():
        if device.type == "cuda" and method_config.sync_bn:
            module = method = torch.nn.SyncBatchNorm.convert_sync_batchnorm(method)
        module = DistributedDataParallel(method, device_ids=[device.index] if device.type == "cuda" else None,
                                         broadcast_buffers=False)
    optimizer = build_optimizer(method, method_config, config.lr, config.batch_size)
    warmup = config.warmup_epochs if config.warmup_epochs is not None else min(method_config.warmup_epochs,
                                                                               config.epochs / 10)
    schedule = build_schedule(optimizer, warmup * steps_per_epoch, config.epochs * steps_per_epoch,
                              method_config.final_lr_ratio)
    return Model(module, method, optimizer, schedule)
