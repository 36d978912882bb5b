"""The evaluation protocols on scikit-learn's digits: a short SSL run against the same backbone at random init.

Digits (1,797 real 8×8 images, 10 classes) upscaled and split 80/20 (every fifth image is validation). One run:
SimCLR on the training folder (`trainer/run.py`), then with `python -m trainer.eval`:
linear probe and kNN of the SSL backbone and of the random-init backbone, and 10% semi-supervised fine-tuning
of the SSL backbone against training from scratch on the same 10% list (same command, same hyperparameters).

    OMP_NUM_THREADS=2 python -m bench.eval_digits --out bench/results/eval_digits_cpu.json
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

import torch

from bench.learning_digits import write_digits
from bench.report import emit

REPO = Path(__file__).resolve().parent.parent


def split_digits(root: Path, size: int) -> tuple[Path, Path]:
    """train/ and val/ class folders: every fifth digit (by index) goes to validation."""
    write_digits(root / "train", size)
    for image in sorted((root / "train").glob("*/*.png")):
        if int(image.stem) % 5 == 0:
            (root / "val" / image.parent.name).mkdir(parents=True, exist_ok=True)
            image.rename(root / "val" / image.parent.name / image.name)
    return root / "train", root / "val"


def evaluate(protocol: str, out: Path, checkpoint: Path | None, common: list[str], *extra: str) -> dict:
    """Run one protocol as a user would; return its eval_<protocol>.json."""
    source = ["--checkpoint", str(checkpoint)] if checkpoint else []
    subprocess.run([sys.executable, "-m", "trainer.eval", "eval", protocol, *source, *common, "--out", str(out),
                    *extra], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads((out / f"eval_{protocol}.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="simclr")
    ap.add_argument("--ssl-epochs", type=int, default=12)
    ap.add_argument("--linear-epochs", type=int, default=30)
    ap.add_argument("--semi-epochs", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", default="1")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genview-eval-digits-"))
    train, val = split_digits(work, args.image_size)
    start = time.perf_counter()
    subprocess.run([sys.executable, str(REPO / "trainer" / "run.py"), "--data", str(train), "--no-quality",
                    "--method", args.method, "--arch", "resnet18", "--epochs", str(args.ssl_epochs),
                    "--batch-size", "128", "--image-size", str(args.image_size), "--workers", args.workers,
                    "--device", args.device, "--out", str(work / "ssl")], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    ssl_minutes = (time.perf_counter() - start) / 60
    ckpt = work / "ssl" / "checkpoint.pt"
    common = ["--train", str(train), "--val", str(val), "--arch", "resnet18", "--image-size", str(args.image_size),
              "--workers", args.workers, "--device", args.device]
    linear = ["--epochs", str(args.linear_epochs), "--batch-size", "256"]
    semi = ["--fraction", "0.1", "--epochs", str(args.semi_epochs), "--batch-size", "32"]
    runs = {}
    for name, checkpoint in (("ssl", ckpt), ("random_init", None)):
        runs[name] = {"linear": evaluate("linear", work / name, checkpoint, common, *linear),
                      "knn": evaluate("knn", work / name, checkpoint, common, "--batch-size", "256")}
    runs["ssl"]["semi"] = evaluate("semi", work / "ssl", ckpt, common, *semi)
    subset = work / "ssl" / "semi_subset.txt"  # scratch trains on exactly the same 10% list
    runs["random_init"]["semi"] = evaluate("semi", work / "scratch", None, common, "--subset-file", str(subset),
                                           *semi[2:])
    top1 = {name: {p: r[p]["top1"] for p in r} for name, r in runs.items()}
    emit({"benchmark": "eval_digits",
          "machine": torch.cuda.get_device_name() if args.device == "cuda" else
          f"{platform.machine()} CPU, {torch.get_num_threads()} threads (shared 2-core VM)",
          "data": f"scikit-learn digits upscaled to {args.image_size}px; {sum(1 for _ in train.glob('*/*'))} train, "
                  f"{sum(1 for _ in val.glob('*/*'))} val (every 5th)",
          "ssl": {"method": args.method, "arch": "resnet18", "epochs": args.ssl_epochs,
                  "minutes": round(ssl_minutes, 2)},
          "protocols": {"linear_epochs": args.linear_epochs, "semi_epochs": args.semi_epochs,
                        "semi_fraction": 0.1, "semi_train_images": runs["ssl"]["semi"]["train_images"],
                        "knn": "k=20 (also 200), tau=0.07"},
          "top1": top1,
          "four_numbers": {"linear_ssl_vs_random": [top1["ssl"]["linear"], top1["random_init"]["linear"]],
                           "knn_k20_ssl_vs_random": [top1["ssl"]["knn"], top1["random_init"]["knn"]],
                           "semi10_ssl_vs_scratch": [top1["ssl"]["semi"], top1["random_init"]["semi"]]},
          "total_minutes": round((time.perf_counter() - start) / 60, 2),
          "results": runs}, args.out)


if __name__ == "__main__":
    main()
