"""GenView SSL training: `python trainer/run.py --data DIR --generator-url URL …` (or under torchrun)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from genview.client import GeneratorClient
from genview.method.losses import weighted_loss
from trainer import dist
from trainer.augment import eval_transform, normalise, pair_transforms
from trainer.backbones import ARCHS
from trainer.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from trainer.data import EvalDataset, PairDataset, image_set
from trainer.evaluate import extract_features, knn_accuracy
from trainer.methods import METHODS, build_method, recipe_for
from trainer.optim import build_optimizer, build_schedule
from trainer.scoring import QualitySource, batch_weights
from trainer.views import ViewCache, ViewPrefetcher

log = logging.getLogger("genview.trainer")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="image folder (recursive), .txt list, or fsspec URL (s3://…)")
    p.add_argument("--generator-url", help="generator service; without it both views come from the original")
    quality = p.add_mutually_exclusive_group()
    quality.add_argument("--scorer-url", help="scorer service for the quality weights (Eq. 13)")
    quality.add_argument("--scorer", choices=["local"], help="score in this process (GENVIEW_SCORER_MODEL)")
    quality.add_argument("--no-quality", action="store_true", help="framework only: all weights 1")
    p.add_argument("--method", choices=METHODS, default="mocov3")
    p.add_argument("--arch", choices=ARCHS, default="resnet50")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256, help="global batch (split over ranks)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--lr", type=float, help="base learning rate per 256 images (default: the method's)")
    p.add_argument("--warmup-epochs", type=float, help="default: the method's, at most a tenth of the run")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, TensorBoard logs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--stop-after-epochs", type=int, help="end this invocation after N epochs (e.g. a time-limited "
                   "cluster job); --resume continues the same schedule")
    p.add_argument("--genview-prob", type=float, default=1.0, help="α: chance of using the generated view")
    p.add_argument("--noise-policy", default="adaptive", help="adaptive | constant:L | random")
    p.add_argument("--gen-steps", type=int, default=20)
    p.add_argument("--gen-size", type=int, default=512)
    p.add_argument("--gen-seed", type=int, default=0)
    p.add_argument("--on-missing-view", choices=["wait", "fallback"], default="wait")
    p.add_argument("--generator-retries", type=int, default=3, help="client retries before a view counts as missing")
    p.add_argument("--lookahead", type=int, default=4,
                   help="batches whose views are fetched beyond those the data loader already holds")
    p.add_argument("--prefetch-concurrency", type=int, default=8)
    p.add_argument("--gamma", type=float, default=1.0, help="γ of the quality softmax (Eq. 13)")
    p.add_argument("--global-weights", action="store_true", help="softmax over the global batch")
    p.add_argument("--workers", type=int, default=4, help="data loader processes per rank")
    p.add_argument("--queue-size", type=int, default=65536, help="MoCo v2 negatives")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--knn-k", type=int, default=20)
    args = p.parse_args(argv)
    if args.noise_policy != "adaptive" and not (args.noise_policy == "random" or args.noise_policy.startswith("constant:")):
        p.error("--noise-policy must be adaptive, random or constant:L")
    return args


class Run:
    """One training run on this rank."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = dist.setup(args.device)
        self.rank, self.world = dist.rank(), dist.world_size()
        if args.batch_size % self.world:
            raise SystemExit(f"--batch-size {args.batch_size} is not divisible by {self.world} ranks")
        self.batch = args.batch_size // self.world
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        self.images = image_set(args.data)
        t, t_plus = pair_transforms(args.method, args.image_size)
        self.views = ViewCache(self.out / "view-cache") if args.generator_url else None
        self.dataset = PairDataset(self.images.paths, t, t_plus, self.views, args.genview_prob, args.seed)
        self.sampler = DistributedSampler(self.dataset, self.world, self.rank, shuffle=True, seed=args.seed,
                                          drop_last=True)
        if len(self.sampler) < self.batch:
            raise SystemExit(f"{len(self.images.paths)} images give fewer than one batch of {self.batch} per rank")
        self.prefetcher = None
        if args.generator_url:
            fields = {"noise_level": "auto" if args.noise_policy == "adaptive" else args.noise_policy,
                      "steps": args.gen_steps, "size": args.gen_size, "seed": args.gen_seed}
            self.prefetcher = ViewPrefetcher(GeneratorClient(args.generator_url, retries=args.generator_retries),
                                             self.images.paths, self.views,
                                             fields, self._lookahead(), args.prefetch_concurrency,
                                             args.on_missing_view)
        self.quality = QualitySource(args.scorer_url, args.scorer == "local", self.device)
        self.model = self._model()
        self.steps_per_epoch = len(self.sampler) // self.batch
        recipe = recipe_for(args.method, args.arch)
        self.optimizer = build_optimizer(self.model, recipe, args.lr, args.batch_size)
        warmup = args.warmup_epochs if args.warmup_epochs is not None else min(recipe.warmup_epochs, args.epochs / 10)
        self.schedule = build_schedule(self.optimizer, warmup * self.steps_per_epoch,
                                       args.epochs * self.steps_per_epoch)
        self.start_epoch, self.step = 0, 0
        if args.resume and (self.out / "checkpoint.pt").exists():
            self._resume(load_checkpoint(self.out / "checkpoint.pt"))
        self.scoring = ThreadPoolExecutor(1, thread_name_prefix="scoring")
        self.metrics = open(self.out / "metrics.jsonl", "a") if self.rank == 0 else None
        self.tb = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(self.out / "tensorboard")

    def _lookahead(self) -> int:
        """Samples fetched beyond training: the batches the data loader holds in flight, plus `--lookahead`."""
        in_flight = max(1, self.args.workers * 2) + 1  # DataLoader prefetch_factor 2 per worker, and the next one
        return (self.args.lookahead + in_flight) * self.batch

    def _model(self) -> torch.nn.Module:
        extra = {"queue_size": self.args.queue_size} if self.args.method == "mocov2" else {}
        model = build_method(self.args.method, self.args.arch, self.args.image_size, **extra).to(self.device)
        if dist.is_distributed():
            if self.device.type == "cuda":
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda"
                                            else None, broadcast_buffers=False)
        return model

    @property
    def method(self) -> torch.nn.Module:
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _resume(self, ckpt: dict) -> None:
        self.method.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.start_epoch, self.step = ckpt["epoch"] + 1, ckpt["step"]
        set_rng_state(ckpt["rng"])
        log.info("resumed from epoch %d (step %d)", ckpt["epoch"], self.step)

    def train(self) -> None:
        last = self.args.epochs
        if self.args.stop_after_epochs is not None:
            last = min(last, self.start_epoch + self.args.stop_after_epochs)
        for epoch in range(self.start_epoch, last):
            self.train_epoch(epoch)
            if self.rank == 0:
                save_checkpoint(self.out / "checkpoint.pt", model=self.method.state_dict(),
                                optimizer=self.optimizer.state_dict(), schedule=self.schedule.state_dict(),
                                epoch=epoch, step=self.step, args=vars(self.args))
                if self.images.labels is not None:
                    self._log({"epoch": epoch, "step": self.step, "knn_top1": self.knn()})
            if dist.is_distributed():
                torch.distributed.barrier()
        self.close()

    def _loader(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        torch.manual_seed(self.args.seed + epoch)
        if self.prefetcher is not None:
            self.prefetcher.start_epoch(list(self.sampler))
        return DataLoader(self.dataset, batch_size=self.batch, sampler=self.sampler, drop_last=True,
                          num_workers=self.args.workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False)

    def train_epoch(self, epoch: int) -> None:
        """Batch k trains while the views of later batches are fetched and batch k+1 is scored."""
        batches = iter(self._loader(epoch))
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch}", disable=self.rank != 0, leave=False)
        data_wait = time.perf_counter()
        current = next(batches)
        data_wait = time.perf_counter() - data_wait
        scored = self.scoring.submit(self.quality.q, current[0], current[1])
        for k in range(self.steps_per_epoch):
            start = time.perf_counter()
            upcoming = next(batches, None) if k + 1 < self.steps_per_epoch else None
            data_wait += time.perf_counter() - start
            next_scored = self.scoring.submit(self.quality.q, upcoming[0], upcoming[1]) if upcoming else None
            start = time.perf_counter()
            q = scored.result()
            score_wait = time.perf_counter() - start
            self.train_step(epoch, current, q, data_wait, score_wait)
            if self.prefetcher is not None:
                self.prefetcher.advance((k + 1) * self.batch)
            current, scored, data_wait = upcoming, next_scored, 0.0
            bar.update()
        bar.close()

    def train_step(self, epoch: int, batch, q, data_wait: float, score_wait: float) -> None:
        start = time.perf_counter()
        x1, x2, _, generated, fell_back = batch
        w = batch_weights(q, self.batch, self.args.gamma, self.args.global_weights).to(self.device)
        x1 = normalise(x1.to(self.device, non_blocking=True))
        x2 = normalise(x2.to(self.device, non_blocking=True))
        lr = self.schedule.get_last_lr()[0]
        loss = weighted_loss(self.model(x1, x2), w)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.args.method == "swav" and epoch == 0:  # SwAV freezes the prototypes during the first epoch
            self.method.prototypes.weight.grad = None
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        self.method.after_step(self.step / (self.args.epochs * self.steps_per_epoch))
        step_time = time.perf_counter() - start
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.step}")
        self._log({"step": self.step, "epoch": epoch, "loss": loss.item(), "lr": lr,
                   "w_mean": w.mean().item(), "w_min": w.min().item(), "w_max": w.max().item(),
                   "generated_fraction": generated.float().mean().item(), "fallbacks": int(fell_back.sum()),
                   "prefetch_wait_s": data_wait, "score_wait_s": score_wait, "step_time_s": step_time})

    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for key, value in record.items():
            if key not in ("step", "epoch"):
                self.tb.add_scalar(key, value, record["step"])

    def knn(self) -> float:
        """kNN top-1 (leave-one-out over the training images) of the current backbone."""
        data = EvalDataset(self.images, eval_transform(self.args.image_size))
        feats, labels = extract_features(self.method.online.net, data, self.device, workers=self.args.workers)
        return knn_accuracy(feats, labels, feats, labels, k=self.args.knn_k, exclude_self=True)

    def close(self) -> None:
        self.scoring.shutdown()
        if self.prefetcher is not None:
            self.prefetcher.close()
        if self.rank == 0:
            self.metrics.close()
            self.tb.close()
        if dist.is_distributed():
            torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    Run(parse_args(argv)).train()


if __name__ == "__main__":
    main()
