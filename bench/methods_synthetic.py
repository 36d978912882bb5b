"""Do the six SSL methods learn? kNN and linear top-1 on the procedural shapes (genview/synthetic.py).

Each method trains in-process from seed 0 with its recipe (optimizer, lr, schedule, views) plus the small-data
options below, on the training split; the backbone's frozen features are scored on the validation split by
weighted kNN (k = 20, cosine, training split as memory) and a linear probe, against the same network at random
init, raw pixels, and the same network trained with labels. Loss per epoch and kNN every --knn-every epochs give
the curves. Profiles: `cpu` (quarter-width ResNet-18 with the small stem, 500 images × 240 epochs, crops ≥ 30%,
hue jitter 0.5; 46 min on 2 cores with `--jobs 2 --threads 1`), `gpu` (full width, 100 epochs, ≤ 8 min on one
H200), `quick` (a seconds-long smoke run of the same code).

    python -m bench.methods_synthetic --profile cpu --jobs 2 --threads 1 --out bench/results/methods_synthetic_cpu.json
    python -m bench.methods_synthetic --profile gpu --out bench/results/methods_synthetic_gpu_h200.json
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from bench.report import emit
from bench.ssl_loop import (
    Budget,
    ViewPairs,
    embed,
    knn_top1,
    linear_top1,
    mean_cosine,
    pixels,
    train,
)
from genview.synthetic import SyntheticSpec, make_split
from genview.training.augment import normalise
from trainer.backbones import backbone
from trainer.methods import METHODS, MethodConfig, build_method, method_config


@dataclass(frozen=True)
class Profile:
    """Data size, network and budget of one benchmark configuration."""

    train: int
    val: int
    size: int
    width: int  # ResNet base width (64: torchvision's)
    epochs: int
    supervised_epochs: int  # the reference trained with labels (one view per image)
    batch_size: int
    workers: int
    device: str
    knn_every: int
    crop_scale: float | None = None  # smallest crop area of every method's two views; None: each recipe's
    hue: float | None = None  # hue jitter of every method's two views; None: each recipe's
    # the calibration bound (the classes are learnable: ≥ 0.90 top-1 with labels) on a larger labelled split of the
    # same generator, (images, epochs); None: the supervised reference on the training split is that bound
    calibration: tuple[int, int] | None = None


PROFILES = {
    # 500 images and crops of ≥ 30% of the image: SimCLR learns in 80 epochs (560 steps), MoCo v2 needs 240 (probes
    # in bench/results/methods_synthetic_probes_cpu.md); 1,000 images × 12 epochs with 8% crops did not. Hue 0.5 (the
    # whole colour circle): the shapes' hues are uniform random, so a recipe's 0.1–0.2 leaves each image's hue a
    # shortcut its two views share (MoCo v3 +0.052 → +0.166, BYOL +0.002 → +0.080 kNN in 560 steps)
    "cpu": Profile(train=500, val=500, size=32, width=16, epochs=240, supervised_epochs=160, batch_size=64, workers=1,
                   device="cpu", knn_every=40, crop_scale=0.3, hue=0.5, calibration=(2000, 60)),
    "gpu": Profile(train=5000, val=1000, size=32, width=64, epochs=100, supervised_epochs=100, batch_size=256,
                   workers=12, device="cuda", knn_every=20, hue=0.5),
    "quick": Profile(train=256, val=128, size=32, width=16, epochs=1, supervised_epochs=2, batch_size=64, workers=0,
                     device="cpu", knn_every=1, crop_scale=0.3, hue=0.5, calibration=(512, 1)),
}
EMA = "EMA momentum is per step: the recipe's (0.99–0.999) would leave the target near its init in a few hundred steps"
PROBES = "(methods_synthetic_probes_cpu.md)"
SMALL_DATA: dict[str, dict] = {
    "mocov2": {"options": {"momentum": 0.99, "queue_size": 256, "base_lr": 0.3},
               "why": EMA + "; 256 keys (4 batches): a queue longer than the 500-image set holds each image's own "
                      "older keys as negatives (1,024 keys: +0.022 kNN in 560 steps); SGD base lr 0.3, not 0.03 "
                      "(+0.030 at 560 steps, +0.178 at 1,680) " + PROBES},
    "mocov3": {"options": {"momentum": 0.99, "temperature": 0.2, "base_lr": 4.0, "hidden": 1024},
               "why": EMA + "; τ 0.2 (its ViT value), not 1.0, which barely moves in 560 steps; LARS base lr 4.0 as "
                      "SimCLR (+0.052 in 560 steps at τ 0.2, +0.166 with hue 0.5); projector and predictor hidden "
                      "1,024, a quarter of 4,096 like the quarter-width backbone " + PROBES},
    "byol": {"options": {"momentum": 0.99, "base_lr": 4.0, "hidden": 1024, "pred_hidden": 1024},
             "why": EMA + "; LARS base lr 4.0, not 0.2 (with hue 0.5: +0.104 kNN in 560 steps, +0.080 at 2.0; at 2.0 "
                    "with the recipe's hue 0.1: +0.002); hidden 1,024, a quarter of 4,096 like the quarter-width "
                    "backbone " + PROBES},
    "simsiam": {"options": {"base_lr": 2.0},
                "why": "SGD base lr 2.0, not 0.05 (with hue 0.5: +0.168 kNN in 560 steps, +0.080 at 1.0, +0.026 at "
                       "0.2, +0.014 at 0.05; the recipe's hue 0.1 at 0.5: +0.016) " + PROBES},
    "swav": {"options": {"prototypes": 30, "swav_queue_length": 0},
             "why": "30 prototypes for 10 classes, not 3,000; frozen for the first epoch (ImageNet: 5,005 steps); "
                    "no queue (a 384-feature queue from epoch 5 at lr 4.0 also ends at ln 30); no local crops (CPU)"},
    "simclr": {"options": {"base_lr": 4.0},
               "why": "LARS base lr 4.0 per 256, not the recipe's 0.3: in 560 CPU steps kNN gains +0.080 at 0.3, "
                      "+0.156 at 1.0, +0.276 at 2.0, +0.428 at 4.0 " + PROBES},
}


REFERENCES = ("supervised", "calibration")  # trained with labels: on the training split; on the calibration split


class Labelled(Dataset):
    """(crop + flip of an image, its label): the supervised reference's training views."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int):
        self.images, self.labels = images, labels
        self.augment = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                                   v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(self.images[index]), self.labels[index]


def supervised_top1(arch: str, width: int, size: int, data: dict, budget: Budget) -> dict:
    """The same network trained with labels (cross-entropy, SGD 0.1, cosine): val top-1 and its features' scores."""
    torch.manual_seed(0)
    net, dim = backbone(arch, size, stem="small", width=width)
    model = torch.nn.Sequential(net, torch.nn.Linear(dim, 10)).to(budget.device)
    loader = DataLoader(Labelled(*data["train"], size), batch_size=budget.batch_size, shuffle=True, drop_last=True,
                        num_workers=budget.workers, persistent_workers=budget.workers > 0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, budget.epochs * len(loader))
    device, start = torch.device(budget.device), time.perf_counter()
    for _ in range(budget.epochs):
        for x, y in loader:
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(normalise(x.to(device))).float(), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        val_images, val_labels = data["val"]
        logits = torch.cat([model(normalise(b.to(device))).float().cpu() for b in val_images.split(512)])
    return {"epochs": budget.epochs, "minutes": round((time.perf_counter() - start) / 60, 2),
            "top1": round(float((logits.argmax(1) == val_labels).float().mean()), 4), **scores(net, data, budget.device)}


def scores(net: torch.nn.Module, data: dict, device: str) -> dict:
    """kNN and linear top-1 of a backbone's frozen features, and their mean cosine."""
    train_f, val_f = embed(net, data["train"][0], device), embed(net, data["val"][0], device)
    return {"knn_top1": knn_top1(train_f, data["train"][1], val_f, data["val"][1]),
            "linear_top1": linear_top1(train_f, data["train"][1], val_f, data["val"][1]),
            "mean_cosine": mean_cosine(val_f)}


def bench_config(method: str, arch: str, profile: Profile, options: dict) -> MethodConfig:
    """The method's recipe with the small stem, the profile's width, crop scale and hue jitter, and the given
    options; an option `views` (ViewAugment fields) changes both global views."""
    options = dict(options)
    views = {**({"scale": (profile.crop_scale, 1.0)} if profile.crop_scale else {}), **options.pop("views", {})}
    config = method_config(method, arch, profile.size, epochs=profile.epochs, stem="small", width=profile.width,
                           **options)
    changed = {}
    for name in ("t", "t_plus"):
        view = getattr(config.crops, name)
        hue = {} if profile.hue is None else {"jitter": (*view.jitter[:3], profile.hue)}
        changed[name] = type(view).model_validate({**view.model_dump(), **hue, **views})
    return config.model_copy(update={"crops": config.crops.model_copy(update=changed)})


def run_method(method: str, options: dict, args: argparse.Namespace, profile: Profile, data: dict) -> dict:
    """Train one method from seed 0; scores at random init and after, loss per epoch, kNN every few epochs."""
    torch.manual_seed(0)
    if method == "swav":  # the prototypes stay frozen for one epoch
        options = {"freeze_prototypes_iters": profile.train // profile.batch_size, **options}
    config = bench_config(method, args.arch, profile, options)
    model = build_method(config).to(profile.device)
    before = scores(model.backbone, data, profile.device)
    knn_curve: dict[int, float] = {0: before["knn_top1"]}

    def log(epoch: int, loss: float) -> None:
        line, epoch = f"{method} epoch {epoch}: loss {loss}", epoch + 1
        if epoch % profile.knn_every == 0 and epoch < profile.epochs:
            train_f = embed(model.backbone, data["train"][0], profile.device)
            knn_curve[epoch] = knn_top1(train_f, data["train"][1], embed(model.backbone, data["val"][0],
                                                                          profile.device), data["val"][1])
            line += f", kNN {knn_curve[epoch]}"
        print(line, flush=True)

    budget = Budget(profile.epochs, profile.batch_size, args.lr, profile.workers, profile.device)
    history = train(model, ViewPairs(data["train"][0], config), budget, on_epoch=log)
    after = scores(model.backbone, data, profile.device)
    knn_curve[profile.epochs] = after["knn_top1"]
    result = {"options": options, "random_init": before, "trained": after,
              "knn_gain": round(after["knn_top1"] - before["knn_top1"], 4), "knn_per_epoch": knn_curve,
              **asdict(history)}
    if method in ("mocov2", "swav"):  # the loss when every logit / prototype score is equal
        result["loss_without_information"] = round(math.log(
            config.queue_size + 1 if method == "mocov2" else config.prototypes), 4)
    print(f"{method}: kNN {before['knn_top1']} -> {after['knn_top1']} in {history.minutes} min", flush=True)
    return result


def load_data(profile: Profile, seed: int, masks: bool = False) -> dict:
    """The train and val splits as (uint8 images, labels) tensors; with `masks`, the training masks too."""
    spec = SyntheticSpec(size=profile.size)
    out = {}
    for split, count in (("train", profile.train), ("val", profile.val)):
        s = make_split(seed, split, count, spec)
        out[split] = (torch.from_numpy(s.images), torch.from_numpy(s.labels))
        if masks and split == "train":
            out["masks"] = torch.from_numpy(s.masks)
    return out


def markdown(result: dict) -> str:
    """The result as text tables: scores per method, then the loss and kNN curves."""
    runs = result["runs"]
    summary = (f"ResNet-18 (small stem, base width {result['profile']['width']}), {result['profile']['epochs']} "
               f"epochs, batch {result['profile']['batch_size']}. Pixels: kNN {result['pixels']['knn_top1']}.")
    for name in REFERENCES:
        if ref := result.get(name):
            summary += (f" Trained with labels on {ref['train']} images ({ref['epochs']} epochs, {name}): top-1 "
                        f"{ref['top1']}, kNN {ref['knn_top1']}, linear {ref['linear_top1']}.")
    lines = [f"# SSL methods on the procedural shapes ({result['data']})", "", summary, "",
             "| method | kNN random init | kNN trained | gain | linear random init | linear trained | minutes |",
             "|---|---|---|---|---|---|---|"]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['random_init']['knn_top1']} | {run['trained']['knn_top1']} | "
                     f"{run['knn_gain']:+.4f} | {run['random_init']['linear_top1']} | {run['trained']['linear_top1']} | "
                     f"{run['minutes']} |")
    lines += ["", "Loss per epoch, then kNN top-1 at the listed epochs:", ""]
    for name, run in runs.items():
        knn = ", ".join(f"{epoch}: {value}" for epoch, value in run["knn_per_epoch"].items())
        lines += [f"- {name}: loss {run['loss_per_epoch']}", f"  kNN {{{knn}}}"]
    return "\n".join(lines) + "\n"


def option(text: str) -> tuple[str, object]:
    key, value = text.split("=", 1)
    return key, json.loads(value)


def run_task(task: str, args: argparse.Namespace, profile: Profile) -> dict:
    """One task of the run in this process: a supervised reference or one method (its data made here)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if task in REFERENCES:
        images, epochs = (profile.train, profile.supervised_epochs) if task == "supervised" else profile.calibration
        data = load_data(replace(profile, train=images), args.seed)
        return {"train": images, **supervised_top1(args.arch, profile.width, profile.size, data, Budget(
            epochs, profile.batch_size, None, profile.workers, profile.device))}
    data = load_data(profile, args.seed)
    small = SMALL_DATA[task]
    options = {**small["options"], **dict(args.set)}
    return {"why": small["why"] if options == small["options"] else "given on the command line",
            **run_method(task, options, args, profile, data)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=PROFILES, default="cpu")
    ap.add_argument("--method", default="all", choices=("all", *METHODS))
    ap.add_argument("--arch", default="resnet18", choices=("resnet18", "resnet50"))
    ap.add_argument("--epochs", type=int, help="default: the profile's")
    ap.add_argument("--lr", type=float, help="base lr per 256 (default: the recipe's)")
    ap.add_argument("--set", type=option, action="append", default=[], help="MethodConfig option KEY=JSON")
    ap.add_argument("--seed", type=int, default=0, help="data seed")
    ap.add_argument("--threads", type=int, help="torch CPU threads per process")
    ap.add_argument("--jobs", type=int, default=1, help="methods trained at once, one process each")
    ap.add_argument("--out", help="JSON file; a .md twin with the tables and curves is written next to it")
    args = ap.parse_args()
    profile = replace(PROFILES[args.profile], epochs=args.epochs or PROFILES[args.profile].epochs)
    data = load_data(profile, args.seed)
    methods = METHODS if args.method == "all" else (args.method,)
    result = {"data": f"genview.synthetic seed {args.seed}: {profile.train} train / {profile.val} val at "
                      f"{profile.size} px, 10 classes", "profile": asdict(profile), "arch": args.arch, "stem": "small",
              "knn": "weighted kNN top-1 on the val split, k=20, cosine, tau=0.07, train split as memory",
              "linear": "logistic regression on standardised frozen features, full-batch Adam, 300 steps",
              "jobs": args.jobs, "threads_per_job": args.threads,
              "pixels": {"knn_top1": knn_top1(pixels(data["train"][0]), data["train"][1], pixels(data["val"][0]),
                                              data["val"][1])},
              "supervised": None, "calibration": None, "runs": {}, "complete": False}
    references = REFERENCES if profile.calibration else REFERENCES[:1]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_task, task, args, profile): task for task in (*references, *methods)}
        for future in as_completed(futures):
            task = futures[future]
            if task in REFERENCES:
                result[task] = future.result()
            else:
                result["runs"][task] = future.result()
            result["runs"] = {m: result["runs"][m] for m in methods if m in result["runs"]}
            result["complete"] = all(result[r] for r in references) and len(result["runs"]) == len(methods)
            emit(result, args.out, profile.device)  # after every task: a cut-short run keeps what it measured
            if args.out and result["supervised"] is not None:
                Path(args.out).with_suffix(".md").write_text(markdown(result))


if __name__ == "__main__":
    main()
