"""Trainer steps/s with `--precision bf16` against fp32: same data, model and loop, runs interleaved in one process.

Each run is the real training loop (`trainer/run.py`, plain two-view SSL, no views, kNN off); the rate counts the
step itself (forward, backward, optimizer), the first step of each run (warm-up) left out.

    python -m bench.trainer_precision --out bench/results/trainer_precision_cpu.json
    python -m bench.trainer_precision --device cuda --arch resnet50 --image-size 224 --batch-size 256 --images 2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from bench.report import emit
from harness.images import image_folder
from trainer import run as trainer_run


def steps_per_s(out: Path, common: list[str], precision: str) -> float:
    """Training steps per second of one run (step time only, first step dropped)."""
    trainer_run.main(["--out", str(out), *common, "--precision", precision])
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    return (len(steps) - 1) / sum(s["step_time_s"] for s in steps[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--method", default="byol")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3, help="fp32/bf16 run pairs, interleaved")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genview-precision-bench-"))
    image_folder(work / "data", classes=4, per_class=args.images // 4, width=96, height=80)
    common = ["--data", str(work / "data"), "--method", args.method, "--arch", args.arch, "--image-size",
              str(args.image_size), "--batch-size", str(args.batch_size), "--epochs", "1", "--workers", "1",
              "--device", args.device, "--knn-every", "0", "--no-quality"]
    rates: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for r in range(args.repeats):
        for precision in rates:
            rates[precision].append(steps_per_s(work / f"{precision}-{r}", common, precision))
    median = {p: statistics.median(v) for p, v in rates.items()}
    emit({"setup": f"{args.method} {args.arch} {args.image_size}px, batch {args.batch_size}, {args.images} images, "
                   f"1 epoch per run, {args.repeats} interleaved run pairs",
          "steps_per_s": rates, "median_steps_per_s": median,
          "bf16_speedup": median["bf16"] / median["fp32"]}, args.out, args.device)


if __name__ == "__main__":
    main()
