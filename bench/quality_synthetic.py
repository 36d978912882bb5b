"""Does the quality-driven loss (Eq. 13–14) recover what false-positive pairs cost? Measured with the masks.

On the procedural shapes (genview/synthetic.py), a fraction of the pairs is made false positive: the second
view is a crop that misses the object (at most 2% of its pixels are object). The same method, seeds and budget
(`bench.methods_synthetic`'s recipe, small-data options and profile) train three arms: `clean` (no false
positives, plain loss), `fp_plain` (false positives, plain loss) and
`fp_oracle` (false positives, each pair weighted by Eq. 13, w = n·softmax(γ q), with an oracle q from the masks:
q = 2·min(c₁, c₂) − 1, c = the view's object share over the image's, capped at 1; −1 for a crop without the
object, +1 when both views hold at least the image's share). The project's scorer q (CLIP tokens, PCA basis)
is not an arm: with the tiny random-weight presets it is meaningless, and the real encoder needs a GPU.

    python -m bench.quality_synthetic --epochs 80 --threads 1 --out bench/results/quality_synthetic_cpu.json
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, replace

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from bench.methods_synthetic import (
    PROFILES,
    SMALL_DATA,
    bench_config,
    load_data,
    scores,
)
from bench.report import emit
from bench.ssl_loop import Budget, train
from genview.method.quality import quality_weights
from genview.training.augment import transforms_for
from trainer.methods import build_method

MISS = 0.02  # a false-positive crop has at most this share of object pixels
FP_SCALE = (0.03, 0.25)  # its area as a share of the image


def object_share(mask: torch.Tensor) -> float:
    return float(mask.float().mean())


def missing_crop(mask: torch.Tensor, size: int, tries: int = 100) -> tuple[int, int, int, int]:
    """A box (top, left, h, w) with at most MISS object pixels (the emptiest of `tries` random boxes)."""
    best, best_share = (0, 0, size, size), 2.0
    for _ in range(tries):
        area = torch.empty(1).uniform_(*FP_SCALE).item() * size * size
        ratio = math.exp(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3)).item())
        h = max(2, min(size, round(math.sqrt(area / ratio))))
        w = max(2, min(size, round(math.sqrt(area * ratio))))
        top, left = int(torch.randint(0, size - h + 1, (1,))), int(torch.randint(0, size - w + 1, (1,)))
        share = object_share(mask[..., top:top + h, left:left + w])
        if share < best_share:
            best, best_share = (top, left, h, w), share
        if share <= MISS:
            break
    return best


class MaskedPairs(Dataset):
    """The method's two views of each image; with probability `fp` the second misses the object. Quality q from
    the masks (oracle, see the module docstring)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, config, fp: float):
        self.images, self.masks, self.fp = images, masks[:, None].to(torch.uint8), fp
        self.views = transforms_for(config.crops)
        self.size = config.crops.size
        self.colour = v2.Compose(self.views.t_plus.transforms[2:])  # t⁺ after its crop and flip

    def __len__(self) -> int:
        return len(self.images)

    def _coverage(self, crop_mask: torch.Tensor, index: int) -> float:
        whole = object_share(self.masks[index])
        return min(1.0, object_share(crop_mask) / whole) if whole > 0 else 0.0

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        img, mask = tv_tensors.Image(self.images[index]), tv_tensors.Mask(self.masks[index])
        x1, m1 = self.views.t(img, mask)
        if torch.rand(1).item() < self.fp:
            top, left, h, w = missing_crop(self.masks[index], self.size)
            x2 = v2.functional.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
            x2, m2 = self.colour(v2.RandomHorizontalFlip()(x2)), self.masks[index][..., top:top + h, left:left + w]
        else:
            x2, m2 = self.views.t_plus(img, mask)
        q = 2 * min(self._coverage(m1, index), self._coverage(m2, index)) - 1
        return x1.as_subclass(torch.Tensor), x2.as_subclass(torch.Tensor), q


def miss_rate(masks: torch.Tensor, size: int) -> float:
    """Share of the false-positive boxes drawn for these masks that hold at most MISS object pixels."""
    boxes = [missing_crop(mask, size) for mask in masks]
    return round(sum(object_share(m[t:t + h, l:l + w]) <= MISS for m, (t, l, h, w) in zip(masks, boxes)) / len(masks),
                 4)


def run_arm(name: str, fp: float, gamma: float | None, args: argparse.Namespace, profile, data: dict) -> dict:
    """One arm from seed 0; gamma None: the plain loss."""
    torch.manual_seed(0)
    config = bench_config(args.method, "resnet18", profile, SMALL_DATA[args.method]["options"])
    model = build_method(config).to(profile.device)
    pairs = MaskedPairs(data["train"][0], data["masks"], config, fp)
    budget = Budget(profile.epochs, profile.batch_size, None, profile.workers, profile.device)
    weighting = (lambda q: quality_weights(q, gamma)) if gamma is not None else None
    history = train(model, pairs, budget, weighting, on_epoch=lambda e, loss: print(f"{name} epoch {e}: loss {loss}",
                                                                                   flush=True))
    result = {"false_positive_fraction": fp, "gamma": gamma, **scores(model.backbone, data, profile.device),
              "loss_per_epoch": history.loss_per_epoch, "minutes": history.minutes}
    print(f"{name}: {result}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="cpu")
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--fp", type=float, default=0.5, help="share of pairs made false positive")
    ap.add_argument("--gamma", type=float, default=1.0, help="γ of Eq. 13 (the paper: 1)")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = replace(PROFILES[args.profile], epochs=args.epochs or PROFILES[args.profile].epochs)
    data = load_data(profile, 0, masks=True)
    arms = {"clean": run_arm("clean", 0.0, None, args, profile, data),
            "fp_plain": run_arm("fp_plain", args.fp, None, args, profile, data),
            "fp_oracle": run_arm("fp_oracle", args.fp, args.gamma, args, profile, data)}
    lost = {k: round(arms["clean"][k] - arms["fp_plain"][k], 4) for k in ("knn_top1", "linear_top1")}
    regained = {k: round(arms["fp_oracle"][k] - arms["fp_plain"][k], 4) for k in ("knn_top1", "linear_top1")}
    torch.manual_seed(0)
    emit({"method": args.method, "profile": asdict(profile), "arms": arms,
          "false_positive_views_missing_the_object": miss_rate(data["masks"], profile.size), "lost_to_false_positives": lost,
          "regained_by_oracle_weighting": regained,
          "scorer_q_arm": "not run: the project's scorer needs real CLIP weights (a GPU); tiny random presets give "
                          "meaningless q"}, args.out, profile.device)


if __name__ == "__main__":
    main()
