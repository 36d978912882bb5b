"""Do the methods learn? SSL with standard views on scikit-learn's digits (1,797 real 8×8 images, 10 classes).

Compares the kNN top-1 (leave-one-out, weighted, k=20) of the backbone after a few minutes of SSL on the CPU
with the same backbone at random initialisation, measured in the same run.

    python -m bench.learning_digits --method simclr --epochs 15 --out bench/results/learning_digits_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

from genview.training.augment import eval_transform
from trainer.data import EvalDataset, image_set
from trainer.evaluate import KNN_KS, extract_features, knn_topk
from trainer.methods import build_method, method_config
from bench.report import emit

REPO = Path(__file__).resolve().parent.parent


def write_digits(root: Path, size: int) -> None:
    """Each digit as an RGB PNG of side `size`, in a folder per class."""
    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        img = Image.fromarray((pixels * 255 / 16).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        img.convert("RGB").save(root / str(label) / f"{i}.png")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--lr", default=None, help="base lr per 256 images (default: the method's)")
    ap.add_argument("--queue-size", default="1024", help="MoCo v2 queue (the dataset has 1,797 images)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genview-digits-"))
    write_digits(work / "digits", args.image_size)
    images = image_set(str(work / "digits"))
    torch.manual_seed(0)
    net = build_method(method_config(args.method, args.arch, args.image_size)).backbone
    feats, labels = extract_features(net, EvalDataset(images, eval_transform(args.image_size)), torch.device("cpu"))
    random_init = knn_topk(feats, labels, feats, labels, leave_one_out=True)[KNN_KS[0]]  # the monitor's knn_top1
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "trainer" / "run.py"), "--data", str(work / "digits"), "--no-quality",
                    "--method", args.method, "--arch", args.arch, "--epochs", str(args.epochs),
                    "--batch-size", str(args.batch_size), "--image-size", str(args.image_size), "--workers", "1",
                    "--device", "cpu", "--queue-size", args.queue_size, *(["--lr", args.lr] if args.lr else []),
                    "--out", str(work / "run")], check=True, cwd=REPO)
    minutes = (time.perf_counter() - start) / 60
    knn = [json.loads(line)["knn_top1"] for line in (work / "run" / "metrics.jsonl").read_text().splitlines()
           if "knn_top1" in line]
    result = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads (2-core VM)",
              "data": "scikit-learn digits, 1797 images, 10 classes, upscaled to "
                      f"{args.image_size}px", "method": args.method, "arch": args.arch, "epochs": args.epochs,
              "lr": args.lr or "method default", "train_minutes": round(minutes, 2), "knn_top1_random_init": random_init,
              "knn_top1_after_ssl": knn[-1], "knn_top1_per_epoch": knn,
              "ratio_after_over_random": knn[-1] / random_init}
    emit(result, args.out)


if __name__ == "__main__":
    main()
