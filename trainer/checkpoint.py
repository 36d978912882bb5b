"""Run folders (local or fsspec URL such as s3://): config.yaml, atomic checkpoints, metrics and TensorBoard logs."""

from __future__ import annotations

import io
import os
import random
import re
import tempfile
from pathlib import Path

import fsspec
import numpy as np
import torch
import yaml
from fsspec.implementations.local import LocalFileSystem

from genview.settings import get_settings

CONFIG = "config.yaml"
LAST = "checkpoint.pt"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
PICTURES = "pictures"  # PNG pictures of training (trainer/pictures.py)
EPOCH_CHECKPOINT = re.compile(r"checkpoint-epoch(\d+)\.pt$")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def storage_options(url: str) -> dict:
    """fsspec options of a run folder URL: s3:// uses the store's endpoint (GENVIEW_S3_ENDPOINT_URL: MinIO, moto)."""
    if not url.startswith("s3://"):
        return {}
    endpoint = get_settings().s3_endpoint_url
    return {"skip_instance_cache": True, "use_listings_cache": False,
            **({"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {})}


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """A checkpoint from a local path or fsspec URL."""
    with fsspec.open(str(path), "rb", **storage_options(str(path))) as f:
        return torch.load(io.BytesIO(f.read()), map_location=map_location, weights_only=False)


class RunFolder:
    """One run's folder at `url` (a local path or an fsspec URL).

    Checkpoints and config.yaml are written straight to it (atomically: a local temp file renamed, or a single
    object PUT). Metrics and TensorBoard logs are written to a local folder (the run folder itself when it is
    local) and copied to the run folder by `sync_logs`.
    """

    def __init__(self, url: str, work_dir: str | None = None):
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options(self.url))
        self.remote = not isinstance(self.fs, LocalFileSystem)
        self.local = Path(work_dir or (tempfile.mkdtemp(prefix="genview-run-") if self.remote else self.root))

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def describe(self, name: str = "") -> str:
        """The URL of a file of the run (for messages)."""
        return f"{self.url}/{name}" if name else self.url

    def holds_run(self) -> bool:
        """Whether a run already lives here (its config, a checkpoint or metrics)."""
        return any(self.fs.exists(self.path(n)) for n in (CONFIG, LAST, METRICS))

    def write(self, name: str, data: bytes) -> None:
        """Write one file atomically: a reader sees the old or the new content, never part of it."""
        if self.remote:
            self.fs.pipe_file(self.path(name), data)
            return
        target = Path(self.path(name))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def write_config(self, config: dict) -> None:
        self.write(CONFIG, yaml.safe_dump(config, sort_keys=True).encode())

    def read_config(self) -> dict | None:
        if not self.fs.exists(self.path(CONFIG)):
            return None
        return yaml.safe_load(self.fs.cat_file(self.path(CONFIG)))

    def save_checkpoint(self, state: dict, epoch: int, every: int = 0, keep: int = 0) -> str:
        """Write `checkpoint.pt` (and `checkpoint-epochNNNN.pt` every `every` epochs, the newest `keep` kept)."""
        buffer = io.BytesIO()
        torch.save({**state, "rng": rng_state()}, buffer)
        self.write(LAST, buffer.getvalue())
        if every and (epoch + 1) % every == 0:
            self.write(f"checkpoint-epoch{epoch + 1:04d}.pt", buffer.getvalue())
            if keep:
                for old in self.epoch_checkpoints()[:-keep]:
                    self.fs.rm_file(self.path(old))
        return self.describe(LAST)

    def epoch_checkpoints(self) -> list[str]:
        """Names of the every-K-epochs checkpoints, oldest first."""
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)] if self.fs.exists(self.root) else []
        return sorted(n for n in names if EPOCH_CHECKPOINT.match(n))

    def load_checkpoint(self) -> dict | None:
        """The last checkpoint, or None when the run has none yet (any node can read it)."""
        if not self.fs.exists(self.path(LAST)):
            return None
        return torch.load(io.BytesIO(self.fs.cat_file(self.path(LAST))), map_location="cpu", weights_only=False)

    def fetch_logs(self) -> None:
        """Remote run: copy its metrics to the local folder before appending (resume on a fresh node)."""
        self.local.mkdir(parents=True, exist_ok=True)
        if self.remote and self.fs.exists(self.path(METRICS)):
            (self.local / METRICS).write_bytes(self.fs.cat_file(self.path(METRICS)))

    def sync_logs(self) -> None:
        """Remote run: copy the local metrics, TensorBoard logs and pictures to the run folder."""
        if not self.remote:
            return
        if (self.local / METRICS).exists():
            self.write(METRICS, (self.local / METRICS).read_bytes())
        for folder in (TENSORBOARD, PICTURES):
            for file in (self.local / folder).rglob("*"):
                if file.is_file():
                    self.write(f"{folder}/{file.relative_to(self.local / folder)}", file.read_bytes())
