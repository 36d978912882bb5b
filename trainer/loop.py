"""The training loop, step by step as the README tells it:

1. views: the prefetcher fills the view cache ahead of the sampler (`genview/training/views.py`);
2. pairs: the data loader builds each image's pair from the original and its view (Eq. 6);
3. quality: the weights of batch k+1 are scored while batch k trains (Eq. 10–13);
4. the method's per-sample loss (Eq. 2–4);
5. the weighted loss (Eq. 14), checked for finiteness, one optimizer step, logged.

At each epoch's end: the kNN monitor, the view counts summed over ranks, the checkpoint, the pictures of what the
epoch trained on (rank 0, `trainer/pictures.py`), the epoch's line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from genview.method.losses import weighted_loss
from genview.training.augment import normalise
from genview.method.quality import PairQuality
from genview.training.quality import QualityScorer, to_pairs
from genview.training.views import ViewMissing
from trainer import dist
from trainer.build import Model, PairData
from trainer.checkpoint import set_rng_state
from trainer.knn_monitor import KnnMonitor
from trainer.methods import MethodConfig
from trainer.optim import NonFiniteGuard
from trainer.pictures import EpochPictures, view_levels
from trainer.preflight import Placement, Refused
from trainer.run_log import RunLog
from trainer.scoring import batch_weights

log = logging.getLogger("genview.trainer")
Batch = tuple  # (crops, index, generated, fell_back) of the data loader


@dataclass
class Progress:
    """The run's counters, kept in every checkpoint; the view counts are the run's totals on rank 0."""

    step: int = 0
    views_wanted: int = 0
    views_fell_back: int = 0

    def sum_views_over_ranks(self, rank: int) -> None:
        """Rank 0 takes the sum of all ranks' counts; the others restart from zero so nothing is counted twice."""
        if not dist.is_distributed():
            return
        counts = torch.tensor([self.views_wanted, self.views_fell_back], dtype=torch.long)
        torch.distributed.all_reduce(counts)
        self.views_wanted, self.views_fell_back = (int(c) for c in counts) if rank == 0 else (0, 0)

    def fallback_fraction(self) -> float:
        return self.views_fell_back / self.views_wanted if self.views_wanted else 0.0


def resume(ckpt: dict, model: Model, place: Placement) -> tuple[int, Progress]:
    """Model, optimizer, schedule, precision and RNG as checkpointed; the epoch to continue with and the counters."""
    model.method.load_state_dict(ckpt["model"])
    model.optimizer.load_state_dict(ckpt["optimizer"])
    model.schedule.load_state_dict(ckpt["schedule"])
    place.precision.load_state_dict(ckpt.get("precision", {}))
    progress = Progress(step=ckpt["step"])
    if place.rank == 0:  # the run's totals live on rank 0 (see Progress.sum_views_over_ranks)
        progress.views_wanted, progress.views_fell_back = ckpt["views"]
    set_rng_state(ckpt["rng"])
    log.info("resumed %s from epoch %d (step %d)", place.folder.describe(), ckpt["epoch"], progress.step)
    return ckpt["epoch"] + 1, progress


class Trainer:
    """Trains one rank's model over the epochs of this invocation."""

    def __init__(self, place: Placement, method_config: MethodConfig, data: PairData, model: Model,
                 quality: QualityScorer | None, knn: KnnMonitor | None, run_log: RunLog, progress: Progress):
        self.place, self.config, self.method_config = place, place.config, method_config
        self.data, self.model, self.quality, self.knn, self.log = data, model, quality, knn, run_log
        self.progress = progress
        self.guard = NonFiniteGuard()
        self.scoring = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self.last_record: dict = {}
        self.pictures = EpochPictures() if place.rank == 0 else None  # trainer/pictures.py

    def train(self, start: int, last: int) -> None:
        """Epochs [start, last); fails the run when more views fell back than --max-fallback-fraction allows."""
        for epoch in range(start, last):
            epoch_start = time.perf_counter()
            loss = self.train_epoch(epoch)
            record = {"epoch": epoch, "step": self.progress.step, "epoch_loss": loss}
            if self.knn and self.knn.due(epoch):
                record.update(self.knn.measure(self.model.method.backbone, self.place.device,
                                               self.method_config.image_size))
            self.progress.sum_views_over_ranks(self.place.rank)
            record["checkpoint"] = self.save(epoch) if self.place.rank == 0 else None
            if self.pictures is not None:
                self.pictures.write(epoch, self.log.tb, self.place.folder.local)
            self.log.epoch_end(record, self.config.epochs, self.progress.views_fell_back,
                               time.perf_counter() - epoch_start)
            self.last_record = record
            dist.barrier()
        self._finish(last)

    def _finish(self, last: int) -> None:
        fraction = self.progress.fallback_fraction()
        if self.last_record:
            self.log.run_end(self.last_record, last, self.config.epochs, fraction)
        if self.place.rank == 0 and fraction > self.config.max_fallback_fraction:
            raise Refused(f"{fraction:.2%} of the generated views fell back to the original (more than "
                          f"--max-fallback-fraction {self.config.max_fallback_fraction}): is the generator healthy?")

    def save(self, epoch: int) -> str:
        state = {"model": self.model.method.state_dict(), "optimizer": self.model.optimizer.state_dict(),
                 "schedule": self.model.schedule.state_dict(), "precision": self.place.precision.state_dict(),
                 "epoch": epoch, "step": self.progress.step,
                 "views": (self.progress.views_wanted, self.progress.views_fell_back),
                 "method_config": self.method_config.to_dict(), "args": self.config.record()}
        return self.place.folder.save_checkpoint(state, epoch, self.config.checkpoint_every, self.config.keep)

    def loader(self, epoch: int) -> DataLoader:
        """This epoch's batches; the prefetcher starts walking the sampler's order (step 1)."""
        data = self.data
        if data.sampler is not None:
            data.sampler.set_epoch(epoch)
        data.dataset.epoch = epoch
        self.model.method.set_epoch(epoch)
        torch.manual_seed(self.config.seed + epoch)
        if data.prefetcher is not None:
            data.prefetcher.start_epoch(list(data.sampler))
        return DataLoader(data.dataset, batch_size=self.place.batch, sampler=data.sampler, drop_last=True,
                          num_workers=data.workers, pin_memory=self.place.device.type == "cuda",
                          persistent_workers=False)

    def train_epoch(self, epoch: int) -> float:
        """The epoch's steps under a progress bar; the mean loss."""
        with tqdm(total=self.data.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="step",
                  disable=self.place.rank != 0, leave=False, dynamic_ncols=True) as bar:
            losses = []
            try:
                for record in self.steps(epoch, iter(self.loader(epoch))):
                    losses.append(record["loss"])
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}",
                                    img_s=f"{record['images_per_s']:.0f}", gen=f"{record['generated_fraction']:.2f}")
                    bar.update()
            except ViewMissing:  # a loader met a view that will not come: the prefetcher knows which, and why
                failure = self.data.prefetcher.failure if self.data.prefetcher else None
                if failure is None:
                    raise
                raise ViewMissing(failure) from None
        return sum(losses) / len(losses)

    def score(self, batch: Batch | None) -> Future | None:
        """Step 3 ahead of time: the batch's pair scores (q, s_f, s_b), in the background (None: all weights 1)."""
        if batch is None:
            return None
        crops = batch[0]
        return self.scoring.submit(lambda: self.quality.scores(to_pairs(crops[0], crops[1])) if self.quality else None)

    def steps(self, epoch: int, batches: Iterator[Batch]) -> Iterator[dict]:
        """Batch k trains while batch k+1 is scored and the views of later batches are fetched; each step's record."""
        data_wait = time.perf_counter()
        current = next(batches)  # step 2: the loader's pairs
        data_wait = time.perf_counter() - data_wait
        scored = self.score(current)
        for k in range(self.data.steps_per_epoch):
            start = time.perf_counter()
            upcoming = next(batches, None) if k + 1 < self.data.steps_per_epoch else None
            data_wait += time.perf_counter() - start
            next_scored = self.score(upcoming)
            start = time.perf_counter()
            scores = scored.result()
            record = self.train_step(epoch, current, scores, data_wait, time.perf_counter() - start)
            if self.data.prefetcher is not None:  # step 1: the views of later batches
                self.data.prefetcher.advance((k + 1) * self.place.batch)
                if self.data.prefetcher.failure:
                    raise ViewMissing(self.data.prefetcher.failure)
            current, scored, data_wait = upcoming, next_scored, 0.0
            yield record

    def train_step(self, epoch: int, batch: Batch, scores: PairQuality | None,
                   data_wait: float, score_wait: float) -> dict:
        """Steps 3–5 on one batch of pairs: weights, per-sample loss, weighted loss; one optimizer step; logged."""
        start = time.perf_counter()
        crops, index, generated, fell_back = batch
        place, model = self.place, self.model
        q = None if scores is None else scores.q
        w_cpu = batch_weights(q, place.batch, self.config.gamma, self.config.global_weights)  # 3. w (Eq. 13)
        w = w_cpu.to(place.device)
        if self.pictures is not None:
            dataset = self.data.dataset
            levels = view_levels(getattr(dataset, "source", None), getattr(dataset, "paths", ()), index, generated)
            self.pictures.add_batch(crops[0], crops[1], w_cpu, generated, levels, scores)
        memory = torch.channels_last if self.method_config.family == "resnet" else torch.contiguous_format
        crops = [normalise(c.to(place.device, non_blocking=True)).contiguous(memory_format=memory) for c in crops]
        lr = model.schedule.get_last_lr()[0]
        with place.precision.autocast():
            per_sample = model.module(crops)  # 4. the method's loss of each sample (Eq. 2–4)
        loss = weighted_loss(per_sample.float(), w)  # 5. mean of w·L (Eq. 14)
        self._optimizer_step(epoch, loss, w)
        step_time = time.perf_counter() - start
        self.progress.views_wanted += int((generated | fell_back).sum())
        self.progress.views_fell_back += int(fell_back.sum())
        record = {"step": self.progress.step, "epoch": epoch, "loss": loss.item(), "lr": lr,
                  "w_mean": w.mean().item(), "w_min": w.min().item(), "w_max": w.max().item(),
                  "generated_fraction": generated.float().mean().item(), "fallbacks": int(fell_back.sum()),
                  "prefetch_wait_s": data_wait, "score_wait_s": score_wait, "step_time_s": step_time,
                  "skipped_steps": self.guard.skipped,
                  "images_per_s": self.config.batch_size / max(1e-9, step_time + data_wait + score_wait)}
        self.log.write(record)
        return record

    def _optimizer_step(self, epoch: int, loss: torch.Tensor, w: torch.Tensor) -> None:
        """Backward and one optimizer step, skipped when the loss, weights or gradients are not finite."""
        model, precision = self.model, self.place.precision
        model.optimizer.zero_grad(set_to_none=True)
        precision.backward(loss)
        precision.unscale(model.optimizer)
        model.method.before_optimizer_step(epoch)
        # fp16: the GradScaler itself skips steps whose gradients overflowed; the guard checks loss and weights
        grads = None if precision.scaler else model.method.parameters()
        precision.step(model.optimizer, skip=not self.guard.ok(loss, w, grads))
        model.schedule.step()
        self.progress.step += 1
        model.method.after_step(self.progress.step / (self.config.epochs * self.data.steps_per_epoch))

    def close(self) -> None:
        self.scoring.shutdown(cancel_futures=True)
