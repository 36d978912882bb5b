"""GenView SSL training: `python trainer/run.py --data DIR --generator-url URL --out RUN …` (or under torchrun).

parse (trainer/config.py) → preflight checks (trainer/preflight.py) → the view source, images and quality scorer,
the pair data, the model (trainer/build.py) → the loop (trainer/loop.py)."""

from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from genview.settings import get_settings
from genview.training.quality import QualityScorer
from genview.training.views import SourceNotReady, ViewMissing, ViewSource
from trainer import build, dist
from trainer.config import RunConfig, parse_args
from trainer.data import ImageSet, shared_image_set
from trainer.knn_monitor import KnnMonitor
from trainer.loop import Progress, Trainer, resume
from trainer.methods import MethodConfig
from trainer.preflight import Placement, Refused, preflight
from trainer.run_log import RunLog

log = logging.getLogger("genview.trainer")


def train(config: RunConfig, resources: ExitStack) -> None:
    """One rank's run: its parts built from the config (each closed by `resources`), then the epochs."""
    started = time.perf_counter()
    resources.callback(dist.teardown)
    place = preflight(config, dist.setup(config.device))
    config = place.config
    torch.manual_seed(config.seed)
    source, images, quality, knn = inputs(place, resources)
    ckpt = place.checkpoint
    method_config = MethodConfig.from_dict(ckpt["method_config"]) if ckpt else config.method_config()
    data = build.pair_data(place, images, source, method_config)
    if data.prefetcher is not None:
        resources.callback(data.prefetcher.close)
    model = build.model(place, method_config, data.steps_per_epoch)
    start, progress = resume(ckpt, model, place) if ckpt else (0, Progress())
    run_log = RunLog.open(place.folder, config.record(), progress.step, place.rank, started)
    resources.callback(run_log.close)
    trainer = Trainer(place, method_config, data, model, quality, knn, run_log, progress)
    resources.callback(trainer.close)
    if place.rank == 0:
        log.info("run %s: %s/%s, %d rank(s) × batch %d on %s, %s, store %s", place.folder.describe(),
                 method_config.method, method_config.arch, place.world, place.batch, place.device,
                 place.precision.name, get_settings().store_url)
    trainer.train(start, config.last_epoch(start))


def inputs(place: Placement, resources: ExitStack) -> tuple[ViewSource | None, ImageSet, QualityScorer | None,
                                                            KnnMonitor | None]:
    """The view source (checked first: a wrong URL fails before anything slow), the training images, the quality
    scorer and the kNN monitor's sets; the services' PCA bases fitted on the images when missing."""
    config = place.config
    source = build.view_source(config)
    if source is not None:
        resources.callback(source.close)
    try:
        images = shared_image_set(config.data)
        quality = build.quality_scorer(config, images, place.device, place.rank)
        if quality is not None:
            resources.callback(quality.close)
        knn = KnnMonitor.of(config, images)
    except ValueError as exc:  # no images
        raise Refused(str(exc), 2) from None
    build.fit_generator_basis(source, images, config, place.rank)
    return source, images, quality, knn


def main(argv: list[str] | None = None) -> None:
    """Exit status 0 (also: a finished run asked to resume), 1 (a service, view or the run failed), 2 (usage)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = parse_args(argv)
    try:
        with ExitStack() as resources:
            train(config, resources)
    except (Refused, SourceNotReady, ViewMissing) as exc:
        code = exc.code if isinstance(exc, Refused) else 1
        message = str(exc)
        print(f"trainer: {message.splitlines()[0]}" if code else message, file=sys.stderr)
        sys.exit(code)


if __name__ == "__main__":
    main()
