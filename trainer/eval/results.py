"""The JSON document each evaluation protocol writes (`eval_linear.json`, `eval_knn.json`, `eval_semi.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from trainer import dist
from trainer.eval.backbone import LoadedBackbone


class EvalResult(BaseModel):
    """Accuracies on the validation images and everything needed to reproduce them."""

    protocol: Literal["linear", "knn", "semi"]
    top1: float
    top5: float | None = None
    knn: dict[str, float] | None = None  # kNN: top-1 per k ("20", "200")
    checkpoint: str | None
    method: str | None
    arch: str
    pretrain_epochs: int
    train_images: int
    val_images: int
    seconds: float
    config: dict[str, Any]


def result(protocol: str, loaded: LoadedBackbone, config: dict, **fields) -> EvalResult:
    return EvalResult(protocol=protocol, checkpoint=loaded.checkpoint, method=loaded.method, arch=loaded.arch,
                      pretrain_epochs=loaded.epochs, config=config, **fields)


def write_result(res: EvalResult, out: str) -> Path:
    """Rank 0 writes OUT/eval_<protocol>.json and prints it; every rank returns the path."""
    path = Path(out) / f"eval_{res.protocol}.json"
    if dist.rank() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(res.model_dump_json(indent=2) + "\n")
        print(json.dumps({"written": str(path), "top1": res.top1, "top5": res.top5, "knn": res.knn}))
    return path
