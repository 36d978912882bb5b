"""Where the trainer's scalars and pictures go (`--logger`): TensorBoard (the default, in the run folder), or
Weights & Biases or MLflow when installed (optional extras `genview[wandb]`, `genview[mlflow]`, imported only
when chosen). Every logger has TensorBoard's SummaryWriter interface: add_scalar, add_histogram, add_image,
flush, close."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np

LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # name → module it needs


def logger_name(name: str) -> str:
    """`--logger` type: a known logger whose package is installed (else one clear line, exit 2)."""
    if name not in LOGGERS:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(LOGGERS)}")
    if importlib.util.find_spec(LOGGERS[name]) is None:
        raise argparse.ArgumentTypeError(f"{name} is not installed: pip install 'genview[{name}]' (or {name})")
    return name


def add_logger_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--logger", type=logger_name, default="tensorboard", metavar="|".join(LOGGERS),
                   help="where scalars and pictures go (PNG pictures are always written to the run folder too)")


def open_logger(name: str, tensorboard_dir: Path, config: dict):
    """A SummaryWriter-like logger: TensorBoard event files in `tensorboard_dir`, or a W&B / MLflow run."""
    if name == "wandb":
        return WandbLogger(config, tensorboard_dir.parent)
    if name == "mlflow":
        return MlflowLogger(config)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(tensorboard_dir)


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


class WandbLogger:
    """A Weights & Biases run (project from WANDB_PROJECT, offline with WANDB_MODE=offline)."""

    def __init__(self, config: dict, folder: Path):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(config=config, dir=str(folder), name=folder.name)

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.run.log({key: value}, step=step)

    def add_histogram(self, key: str, values, epoch: int) -> None:
        self.run.log({key: self.wandb.Histogram(_numpy(values)), "epoch": epoch})

    def add_image(self, key: str, image, epoch: int, dataformats: str = "HWC") -> None:
        self.run.log({key: self.wandb.Image(_numpy(image)), "epoch": epoch})

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()
        self.wandb.teardown()  # stop the wandb service now, not in an atexit hook that fails once it has gone


class MlflowLogger:
    """An MLflow run (tracking URI from MLFLOW_TRACKING_URI); histograms are logged as their pictures."""

    def __init__(self, config: dict):
        import mlflow

        self.mlflow = mlflow
        self.run = mlflow.start_run()
        mlflow.log_params({k: str(v)[:500] for k, v in config.items()})

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.mlflow.log_metric(key, value, step=step)

    def add_histogram(self, key: str, values, epoch: int) -> None:
        from trainer.pictures import histogram_image

        self.mlflow.log_image(histogram_image(_numpy(values), key), key=key, step=epoch)

    def add_image(self, key: str, image, epoch: int, dataformats: str = "HWC") -> None:
        self.mlflow.log_image(_numpy(image), key=key, step=epoch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.mlflow.end_run()
