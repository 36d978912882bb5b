"""Start-up time of the `genview` console script: median wall time of `genview --help`, `--version` and every
command's `--help` (goal: under 1 s each on a 2-core machine), against two baselines measured in the same run:
a bare interpreter (`python -c pass`) and `import torch` (what a command's help must not pay).

    python -m bench.cli_startup --out bench/results/cli_startup_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.report import emit
from services.cli import build_parser
from trainer.eval.cli import PROTOCOLS

GOAL_S = 1.0


def command_lines() -> list[list[str]]:
    """`--help`, `--version`, and `<command> --help` for every command of the tree (eval's protocols too)."""
    commands = build_parser()._subparsers._group_actions[0].choices
    lines = [["--help"], ["--version"]] + [[name, "--help"] for name in commands]
    return lines + [["eval", name, "--help"] for name in PROTOCOLS]


def median_s(argv: list[str], repeats: int) -> float:
    """Median wall time of running `argv` to completion (output discarded)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=300)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    script = Path(sys.executable).with_name("genview")  # the console script of this environment (no shims)
    genview = [str(script)] if script.exists() else [sys.executable, "-m", "services.cli"]
    baselines = {"python -c pass": median_s([sys.executable, "-c", "pass"], args.repeats),
                 "python -c 'import torch'": median_s([sys.executable, "-c", "import torch"], args.repeats)}
    timings = {" ".join(["genview", *line]): median_s([*genview, *line], args.repeats) for line in command_lines()}
    slow = sorted(name for name, s in timings.items() if s >= GOAL_S)
    emit({"benchmark": "cli_startup", "repeats": args.repeats, "goal_s": GOAL_S, "runner": " ".join(genview),
          "baseline_median_s": baselines, "median_s": timings,
          "ratio_to_import_torch": {n: s / baselines["python -c 'import torch'"] for n, s in timings.items()},
          "over_goal": slow}, args.out)


if __name__ == "__main__":
    main()
