"""Checks that come before anything slow, in one place: a refused run ends at once with one line on stderr
(exit status 2 for a usage error), before any service is asked or any image read."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from trainer import dist
from trainer.checkpoint import RunFolder
from trainer.config import RunConfig
from trainer.precision import Precision, PrecisionUnsupported, default_precision

if TYPE_CHECKING:
    from genview.training.shards import ShardViewSource

log = logging.getLogger("genview.trainer")


class Refused(Exception):
    """The run cannot start or continue; `code` is the exit status (2: a usage error)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Placement:
    """What the checks settled: this rank and its share of the batch, the run folder, precision, what to resume."""

    config: RunConfig  # with the resolved precision, which config.yaml records
    device: torch.device
    rank: int
    world: int
    batch: int  # per rank
    folder: RunFolder
    precision: Precision
    checkpoint: dict | None


def preflight(config: RunConfig, device: torch.device) -> Placement:
    """Every check that needs only the options, the ranks and the run folder."""
    rank, world = dist.rank(), dist.world_size()
    if config.batch_size % world:
        raise Refused(f"--batch-size {config.batch_size} is not divisible by {world} ranks", 2)
    folder = RunFolder(config.out, config.work_dir)
    check_writable(folder, rank)
    checkpoint = checkpoint_to_resume(config, folder)
    try:
        precision = Precision(config.precision or default_precision(device), device)
    except PrecisionUnsupported as exc:
        raise Refused(str(exc), 2) from None
    return Placement(config.model_copy(update={"precision": precision.name}), device, rank, world,
                     config.batch_size // world, folder, precision, checkpoint)


def check_writable(folder: RunFolder, rank: int) -> None:
    """--out (and a remote run's local work folder) takes a file: written and removed again."""
    name = f".write-probe-{rank}-{os.getpid()}"
    try:
        folder.write(name, b"")
        folder.fs.rm_file(folder.path(name))
        folder.local.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Refused(f"--out {folder.describe()} is not writable: {exc.strerror or exc}", 2) from None


def checkpoint_to_resume(config: RunConfig, folder: RunFolder) -> dict | None:
    """The checkpoint to continue from; refuses a folder that holds a run without --resume, or a finished run."""
    if not config.resume:
        if folder.holds_run():
            raise Refused(f"{folder.describe()} already holds a run: pass --resume to continue it, or "
                          f"choose another --out", 2)
        return None
    ckpt = folder.load_checkpoint()
    if ckpt is None:
        log.info("no checkpoint in %s yet: starting the run", folder.describe())
    elif ckpt["epoch"] + 1 >= config.epochs:
        raise Refused(f"the run in {folder.describe()} is finished ({ckpt['epoch'] + 1} of {config.epochs} "
                      f"epochs): nothing to resume; raise --epochs to train longer", 0)
    return ckpt


def check_batches(per_rank: int, batch: int) -> None:
    """Each rank's share of the data gives at least one batch."""
    if per_rank < batch:
        raise Refused(f"{per_rank} images per rank give fewer than one batch of {batch}", 2)


def shard_workers(shards: ShardViewSource, world: int, workers: int, batch: int) -> int:
    """Loader workers per rank for --views-shards: the most, up to --workers, with which every (rank, worker) slot
    holds at least one batch (each slot reads whole shards); refused with the numbers when one worker cannot."""
    for candidate in range(max(1, workers), 0, -1):
        if len(shards.urls) >= world * candidate and shards.per_slot(world, candidate) >= batch:
            if candidate < workers:
                log.warning("--workers %d -> %d: %d shards split over %d rank(s) x %d loader workers would give "
                            "a worker fewer than one batch of %d", workers, candidate, len(shards.urls), world,
                            workers, batch)
            return candidate if workers else 0
    if len(shards.urls) < world:
        raise Refused(f"{len(shards.urls)} shards cannot feed {world} ranks: each rank reads whole shards, so "
                      f"write at least {world} shards (--images-per-shard)", 2)
    least = sum(sorted(shards.counts.values())[:len(shards.urls) // world])
    raise Refused(f"{len(shards.urls)} shards over {world} rank(s) x 1 loader worker give a rank {least} images "
                  f"(its {len(shards.urls) // world} smallest shards), fewer than one batch of {batch}: lower "
                  f"--batch-size (global {batch * world}) or write more images", 2)
