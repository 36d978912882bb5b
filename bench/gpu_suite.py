"""The GPU suite (issue 24): every generation path and speed lever, and the scorer, in one process.

Generator: the real SD 2.1 unCLIP-H architecture with seeded random weights, 768², 20 steps, CFG 10, views resized
to 512². Groups, in this order (`--only` picks groups or single runs by name):
  baseline  official loop (one call per image), plain batched diffusers, the worker through its loop (eager, fp16);
  compiled  the worker and plain diffusers on one compiled UNet with the exact levers (fused q/k/v, channels-last,
            torch.compile default mode, batches padded: what GENVIEW_COMPILE=true runs);
  scorer    PairScorer in-process (eager and compiled) and `/score/batch` through `genview serve`;
  stacked   the compiled exact levers at a larger batch, then with bf16 and FP8 (torchao) on top;
  alone     each lever on the eager worker: bf16, fused q/k/v, channels-last, batches 32/48, FP8;
  autotune  the stacks with torch.compile max-autotune (CUDA graphs on the padded shapes): long compiles, last.
Each worker run records images/s, GPU-idle share, peak memory, achieved TFLOP/s and its fraction of the device's
peak (FLOPs counted with torch.utils.flop_counter), ImageNet-1K GPU-hours at that rate, and its views against the
fp16 eager reference on the same inputs and seeds. Results are written after every step (a timeout keeps them);
a step that fails is recorded with its error and the suite goes on; steps that would overrun `--budget-s` are
skipped.

    python -m bench.gpu_suite                  # GPU: bench/results/gpu_suite_<device>.json (--budget-s 450)
    python -m bench.gpu_suite --quick          # CPU, tiny presets, < 2 min: bench/results/gpu_suite_quick_cpu.json
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from bench.env import REPO, device_name, environment, peak_memory_gb, reset_peak_memory
from bench.gpu_measure import (PEAK_SOURCE, GenerationFlops, count_flops, device_peak_tflops, matmul_tflops,
                               view_effect)
from bench.gpu_paths import Workload, accelerated, build, diffusers_batched, inputs, official_loop, worker_path
from bench.gpu_scorer import scorer_runs
from genview.models.acceleration import Acceleration
from genview.models.unclip import UnclipGenerator

GROUPS = ("baseline", "compiled", "scorer", "stacked", "alone", "autotune")
IMAGENET_IMAGES = 1_281_167
COST_S = {"eager": 20.0, "compile": 100.0, "max-autotune": 300.0, "scorer": 90.0}  # rough H200 s a step, for the budget


@dataclass(frozen=True)
class Lever:
    """One worker configuration: a name, its group, the levers and the batch size."""

    name: str
    group: str
    acceleration: Acceleration
    batch: int

    def cost_s(self) -> float:
        a = self.acceleration
        kind = "eager" if not a.compile else ("max-autotune" if "autotune" in a.compile_mode else "compile")
        return COST_S[kind] * (self.batch / 16 if kind == "eager" else 1)


def levers(batch: int, big_batches: list[int], stack_batch: int) -> list[Lever]:
    """The worker configurations after the eager baselines (they run group by group, in GROUPS' order)."""
    plain = Acceleration.off()
    exact = replace(plain, fuse_qkv=True, channels_last=True, compile=True)  # what GENVIEW_COMPILE=true runs
    autotune = replace(exact, compile_mode="max-autotune")
    return [Lever("worker_compiled", "compiled", exact, batch),
            Lever(f"exact_compiled_batch{stack_batch}", "stacked", exact, stack_batch),
            Lever(f"exact_compiled_bf16_fp8_batch{stack_batch}", "stacked", replace(exact, dtype="bf16", fp8=True),
                  stack_batch),
            Lever("bf16", "alone", replace(plain, dtype="bf16"), batch),
            Lever("fuse_qkv", "alone", replace(plain, fuse_qkv=True), batch),
            Lever("channels_last", "alone", replace(plain, channels_last=True), batch),
            *[Lever(f"batch{b}", "alone", plain, b) for b in big_batches],
            Lever("fp8", "alone", replace(plain, fp8=True), batch),
            Lever(f"exact_autotune_batch{stack_batch}", "autotune", autotune, stack_batch),
            Lever(f"exact_autotune_bf16_fp8_batch{stack_batch}", "autotune",
                  replace(autotune, dtype="bf16", fp8=True), stack_batch)]


class Suite:
    """The run's state: the reference pipeline, its views, FLOPs, the result document and the time budget."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.device = args, torch.device(args.device)
        self.start = time.monotonic()
        self.only = set(args.only.split(","))
        self.result: dict = {"env": environment(self.device), "config": vars(args), "runs": {}}
        self.reference = build(args.arch, self.device)
        self.reference_generator = UnclipGenerator(self.reference, "bench")
        data = inputs(max([args.batch, args.official + 1, args.stack_batch, *args.big_batches]))
        self.work = Workload(data, args.steps, args.guidance, args.size, args.rounds, args.warm_steps)
        self.reference_views: dict = {}
        self.flops: GenerationFlops | None = None
        self.peak = device_peak_tflops(device_name(self.device))

    def save(self, **values) -> None:
        """Add `values` to the result document, print them and rewrite the file."""
        self.result.update(values)
        self.write(values)

    def record(self, name: str, **values) -> None:
        self.result["runs"][name] = values
        self.write({name: values})

    def write(self, printed: dict) -> None:
        print(json.dumps(printed, default=str)[:400], flush=True)  # the file has it all; the tail shows the table
        Path(self.args.out).write_text(json.dumps(self.result, indent=2, default=str) + "\n")

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def selected(self, name: str, group: str) -> bool:
        return bool({name, group} & self.only)

    def attempt(self, fn) -> dict:
        """`fn()`'s values with the peak memory, or its error (one failing lever must not lose the others)."""
        reset_peak_memory(self.device)
        t0 = time.monotonic()
        try:
            values = fn()
        except Exception as exc:  # noqa: BLE001
            values = {"error": f"{type(exc).__name__}: {exc}"[:600]}
        gc.collect()  # the step's model copy, before the next one is made
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return {"peak_memory_gb": peak_memory_gb(self.device), **values, "seconds": round(time.monotonic() - t0, 1)}

    def over_budget(self, cost_s: float) -> dict | None:
        """Why a step of about `cost_s` (an H200's time) is skipped when it would overrun the budget, or None."""
        if cost_s > self.left_s():
            return {"skipped": f"budget: {self.left_s():.0f} s left, about {cost_s:.0f} s needed"}
        return None

    def step(self, name: str, cost_s: float, fn) -> None:
        """Run and record one measurement, or record that the budget skipped it."""
        skipped = self.over_budget(cost_s)
        if skipped:
            self.record(name, **skipped)
            return
        torch._dynamo.reset()  # every compiled configuration compiles afresh for its own shapes
        self.record(name, **self.attempt(fn))

    def rates(self, images_per_s: float) -> dict:
        """Achieved TFLOP/s, its fraction of the device's peak and the ImageNet-1K GPU-hours of a rate."""
        tflops = self.flops.tflops_per_s(images_per_s) if self.flops else None
        return {"images_per_s": images_per_s, "achieved_tflops": tflops,
                "fraction_of_peak": tflops / self.peak if tflops and self.peak else None,
                "imagenet_gpu_hours": IMAGENET_IMAGES / images_per_s / 3600}

    def worker(self, generator: UnclipGenerator, batch: int, padded: bool, reference: bool = False) -> dict:
        """The worker's rates on `generator`; `reference`: its views are what the others' are compared with."""
        run = worker_path(generator, self.work, batch, padded)
        if reference:
            self.reference_views = run.views
        effect = self.reference_views and view_effect(self.reference_views, run.views, self.reference_generator)
        return {**self.rates(run.images_per_s), "gpu_idle_ratio": run.gpu_idle_ratio, "batch": batch,
                "effect_vs_fp16_reference": effect and effect.as_dict()}

    def lever(self, lever: Lever) -> dict:
        """The worker with the lever's configuration (a copy of the reference weights); the compiled baseline
        also times plain diffusers on the same compiled UNet."""
        generator = accelerated(self.reference, lever.acceleration, "bench")
        values = {"acceleration": vars(lever.acceleration),
                  "compile_applied": lever.acceleration.compile and self.device.type == "cuda",
                  **self.worker(generator, lever.batch, lever.acceleration.compile),
                  "peak_memory_gb": peak_memory_gb(self.device)}  # before the diffusers run below resets it
        if lever.group == "compiled":
            self.record("diffusers_compiled", **self.attempt(
                lambda: self.rates(diffusers_batched(generator.pipe, self.work, lever.batch))))
        return values


def measure_ceilings(suite: Suite) -> None:
    args = suite.args
    suite.flops = count_flops(suite.reference_generator, suite.work.data[0], args.steps, args.guidance, args.size)
    suite.save(flops=vars(suite.flops), device_peak_tflops=suite.peak, device_peak_source=PEAK_SOURCE,
               measured_matmul_tflops=matmul_tflops(suite.device),
               resolution=suite.reference.unet.config.sample_size * suite.reference.vae_scale_factor)


def run_all(suite: Suite) -> None:
    """Group by group in GROUPS' order (the goals' runs first, diagnostics after, max-autotune's long compiles
    last); the worker's eager baseline always runs: its views are the reference."""
    args, work, ref = suite.args, suite.work, suite.reference
    suite.step("worker_eager", COST_S["eager"],
               lambda: suite.worker(suite.reference_generator, args.batch, False, reference=True))
    if suite.selected("diffusers_eager", "baseline"):
        suite.step("diffusers_eager", COST_S["eager"], lambda: suite.rates(diffusers_batched(ref, work, args.batch)))
    if suite.selected("official_eager", "baseline"):
        suite.step("official_eager", COST_S["eager"], lambda: suite.rates(official_loop(ref, work, args.official)))
    all_levers = levers(args.batch, args.big_batches, args.stack_batch)
    for group in GROUPS[1:]:
        if group == "scorer" and suite.selected("scorer", "scorer"):
            suite.save(scorer=suite.over_budget(COST_S["scorer"]) or suite.attempt(lambda: scorer_runs(args)))
        for lever in (lv for lv in all_levers if lv.group == group and suite.selected(lv.name, group)):
            suite.step(lever.name, lever.cost_s(), lambda lever=lever: suite.lever(lever))


def _cell(value, spec: str) -> str:
    """One table cell: the value formatted, or a dash as wide."""
    return format(value, spec) if value is not None else format("-", spec[:2])  # every width is one digit


def summary(result: dict) -> str:
    """The table printed last (what a device call's output tail shows)."""
    runs = result["runs"]
    base = runs.get("diffusers_eager", {}).get("images_per_s")
    lines = [f"{'run':<42}{'img/s':>8}{'×diff':>7}{'idle':>6}{'GB':>6}{'TFLOP/s':>9}{'%peak':>7}{'px':>5}"
             f"{'cos':>8}{'IN1k h':>8}"]
    for name, r in runs.items():
        if "images_per_s" not in r:
            lines.append(f"{name:<42}  {r.get('skipped') or r.get('error') or ''}"[:160])
            continue
        e = r.get("effect_vs_fp16_reference") or {}
        lines.append(f"{name:<42}" + "".join(_cell(v, spec) for v, spec in (
            (r["images_per_s"], ">8.3g"), (base and r["images_per_s"] / base, ">7.2f"),
            (r.get("gpu_idle_ratio"), ">6.1%"), (r.get("peak_memory_gb"), ">6.1f"), (r.get("achieved_tflops"), ">9.1f"),
            (r.get("fraction_of_peak"), ">7.1%"), (e.get("max_pixel_diff"), ">5"), (e.get("clip_cosine_min"), ">8.4f"),
            (r["imagenet_gpu_hours"], ">8.0f"))))
    scorer = result.get("scorer")
    if scorer:
        lines.append("scorer pairs/s: " + json.dumps({k: v for k, v in scorer.items() if "pairs_per_s" in k
                                                      or "over" in k}, default=str))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny presets on the CPU (< 2 min)")
    ap.add_argument("--arch", default="sd21-unclip-h-random")
    ap.add_argument("--scorer", default="convnext-base-w-random")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=16, help="images per batch of the baselines and single levers")
    ap.add_argument("--big-batches", type=lambda s: [int(b) for b in s.split(",")], default=[32, 48])
    ap.add_argument("--stack-batch", type=int, default=32, help="batch of the stacked runs")
    ap.add_argument("--rounds", type=int, default=1, help="timed batches per run")
    ap.add_argument("--official", type=int, default=3, help="timed images of the official loop")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warm-steps", type=int, default=2, help="denoising steps of the warm-up batch (same shapes)")
    ap.add_argument("--guidance", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=512, help="output side of the views")
    ap.add_argument("--scorer-batch", type=int, default=256, help="images (2 per pair) per scorer call")
    ap.add_argument("--scorer-requests", type=int, default=8, help="scorer batches per timed run")
    ap.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups {GROUPS} or run names")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip steps that would end after this")
    ap.add_argument("--out", default=None, help="a file, or a folder for gpu_suite_<device>.json (default: "
                    "bench/results/)")
    ap.add_argument("--summary", metavar="JSON", help="only print the table of an earlier result file")
    args = ap.parse_args(argv)
    if args.quick:
        args.arch, args.scorer, args.device, args.batch, args.big_batches, args.stack_batch = ("tiny", "tiny", "cpu",
                                                                                               4, [8], 8)
        args.official, args.steps, args.warm_steps, args.size = 2, 2, 1, 64
        args.scorer_batch, args.scorer_requests = 16, 3
    known = {*GROUPS, "diffusers_eager", "official_eager", "scorer",
             *(lv.name for lv in levers(args.batch, args.big_batches, args.stack_batch))}
    if set(args.only.split(",")) - known:
        ap.error(f"unknown runs or groups {sorted(set(args.only.split(',')) - known)}; choose from {sorted(known)}")
    if not args.summary and (args.out is None or Path(args.out).is_dir()):
        slug = "quick_cpu" if args.quick else re.sub(r"[^a-z0-9]+", "_", device_name(args.device).lower()
                                                     .replace("nvidia", "")).strip("_")
        args.out = str(Path(args.out or REPO / "bench" / "results") / f"gpu_suite_{slug}.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.summary:
        result = json.loads(Path(args.summary).read_text())
        print(summary(result))
        return result
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.device == "cpu":  # one thread, as the scorer service's worker (harness.processes.service_env); more
        torch.set_num_threads(1)  # threads on a shared small VM oversubscribe its cores and time the neighbours
    suite = Suite(args)
    measure_ceilings(suite)
    run_all(suite)
    print(summary(suite.result), flush=True)
    return suite.result


if __name__ == "__main__":
    main()
