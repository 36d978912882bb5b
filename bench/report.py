"""Printing and saving benchmark results, each with the environment it was measured in (bench/env.py)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.env import environment


def emit(result: dict, out: str | None, device: torch.device | str = "cpu") -> None:
    """Add the environment (commit, date, device, versions, CPUs), print as JSON and, if `out` is given, write it."""
    text = json.dumps({"env": environment(device), **result}, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
