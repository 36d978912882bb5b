"""Trainer overhead of the GenView path against plain two-view SSL, same data and model, same run.

GenView: views pre-generated in the generator's store (a first pass puts them there), fetched through the
prefetcher, quality weights from the local tiny scorer. Plain: both views from the original, no weights.
Live: a first epoch whose every view is generated while it trains (`--live-steps` denoising steps each, fresh
seeds), as a run without pre-generated views sees it. Step rate counts everything the training loop waits for
(data, scoring) plus the step itself.

    python -m bench.trainer_overhead --out bench/results/trainer_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from genview.models.presets import ensure_random_unclip
from harness.images import image_folder
from harness.processes import service_env, start_api
from bench.report import emit

REPO = Path(__file__).resolve().parent.parent


def train(out: Path, env: dict, *args: str) -> list[dict]:
    subprocess.run([sys.executable, str(REPO / "trainer" / "run.py"), "--out", str(out), *args], check=True,
                   env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def summary(steps: list[dict]) -> dict:
    """Steps/s over the loop's whole time per step, and the share of it spent waiting for data."""
    total = sum(s["step_time_s"] + s["prefetch_wait_s"] + s["score_wait_s"] for s in steps)
    return {"steps": len(steps), "steps_per_s": len(steps) / total,
            "prefetch_wait_share": sum(s["prefetch_wait_s"] for s in steps) / total,
            "score_wait_share": sum(s["score_wait_s"] for s in steps) / total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--live-steps", type=int, nargs="+", default=[2, 20], help="generator steps of live epochs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="genview-trainer-bench-"))
    image_folder(work / "data", classes=4, per_class=args.images // 4, width=96, height=80)
    cache = work / "cache"
    ensure_random_unclip("tiny", cache)
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=str(cache),
                      store_url=f"file://{work / 'store'}")
    server, url = start_api("serve", env, work)
    common = ["--data", str(work / "data"), "--method", "simclr", "--arch", "resnet18", "--image-size",
              str(args.image_size), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
              "--workers", "1", "--device", "cpu"]
    genview = ["--generator-url", url, "--gen-steps", "2", "--gen-size", "96"]
    try:
        live = {steps: train(work / f"live-{steps}", env, *common, *genview, "--no-quality", "--epochs", "1",
                             "--gen-steps", str(steps), "--gen-seed", str(steps)) for steps in args.live_steps}
        train(work / "pregenerate", env, *common, *genview, "--no-quality", "--epochs", "1")
        plain = train(work / "plain", env, *common, "--no-quality")
        framework = train(work / "framework", env, *common, *genview, "--no-quality")
        full = train(work / "genview", env, *common, *genview, "--scorer", "local")
    finally:
        server.stop()
    result = {"machine": f"{platform.machine()} CPU, 2-core VM, torch {torch.__version__}",
              "setup": f"simclr resnet18 {args.image_size}px, batch {args.batch_size}, {args.images} images, "
                       f"{args.epochs} epochs, 1 loader worker",
              "plain": summary(plain), "genview_no_quality": summary(framework), "genview_local_scorer": summary(full)}
    for steps, records in live.items():
        result[f"live_first_epoch_{steps}_steps"] = summary(records)
    for key in ("genview_no_quality", "genview_local_scorer", *(f"live_first_epoch_{s}_steps" for s in live)):
        result[f"{key}_overhead"] = result["plain"]["steps_per_s"] / result[key]["steps_per_s"] - 1
    emit(result, args.out)


if __name__ == "__main__":
    main()
