"""Printing and saving benchmark results, each with the environment it was measured in (bench/env.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from bench.env import environment


def emit(result: dict, out: str | None, device: torch.device | str = "cpu") -> None:
    """Add the environment (commit, date, device, versions, CPUs), print as JSON and, if `out` is given, write it."""
    text = json.dumps({"env": environment(device), **result}, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def run_main(doc: str | None, scenario: Callable[[Path, argparse.Namespace], object],
             options: dict[str, dict] | None = None) -> None:
    """A benchmark's command line: `--out` and `options` (flag → `add_argument` keywords); `scenario(workdir,
    args)` runs in a temporary folder and returns a dataclass, emitted with the environment."""
    import tempfile
    from dataclasses import asdict

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    for flag, keywords in (options or {}).items():
        parser.add_argument(flag, **keywords)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = scenario(Path(tmp), args)
    emit(asdict(result), args.out)
