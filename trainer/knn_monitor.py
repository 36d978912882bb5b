"""The kNN monitor of a run: weighted-kNN top-1 of the backbone on fixed, bounded samples, every --knn-every epochs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from genview.training.augment import eval_transform
from trainer.config import RunConfig
from trainer.data import EvalDataset, ImageSet, held_out, image_set
from trainer.evaluate import KNN_KS, extract_features, knn_topk

log = logging.getLogger("genview.trainer")


@dataclass(frozen=True)
class KnnMonitor:
    """A fixed sample of the training set as the bank, queried by one of --val-data (or leave-one-out)."""

    bank: ImageSet
    queries: ImageSet | None
    every: int
    workers: int

    @classmethod
    def of(cls, config: RunConfig, images: ImageSet) -> KnnMonitor | None:
        """None when the monitor is off or the images (or --val-data) are not in class folders."""
        if not config.knn_every:
            return None
        bank = held_out(images, config.knn_size, config.seed)
        queries = held_out(image_set(config.val_data), config.knn_size, config.seed) if config.val_data else None
        if bank.labels is None or (queries is not None and queries.labels is None):
            log.info("kNN monitor off: the training images%s are not in class folders",
                     " or --val-data" if queries is not None else "")
            return None
        return cls(bank, queries, config.knn_every, config.workers)

    def due(self, epoch: int) -> bool:
        return (epoch + 1) % self.every == 0

    def measure(self, backbone: torch.nn.Module, device: torch.device, image_size: int) -> dict:
        """Weighted-kNN top-1 (k = 20, 200, τ = 0.07) as the epoch record's `knn_top1*` entries."""
        transform = eval_transform(image_size)

        def features(images: ImageSet):
            return extract_features(backbone, EvalDataset(images, transform), device, workers=self.workers)

        bank_feats, bank_labels = features(self.bank)
        query_feats, query_labels = features(self.queries) if self.queries else (bank_feats, bank_labels)
        top1 = knn_topk(bank_feats, bank_labels, query_feats, query_labels, leave_one_out=self.queries is None)
        return {f"knn_top1_k{k}": top1[k] for k in KNN_KS} | {"knn_top1": top1[KNN_KS[0]]}
