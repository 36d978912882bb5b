"""The `genview` command: run the services and workers, fit PCA bases."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from genview.settings import get_settings

log = logging.getLogger("genview")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT, so workers finish their batch and exit cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def run_api(module: str):
    """A command that serves `module.create_app()` with uvicorn."""

    def run(args: argparse.Namespace) -> None:
        import importlib

        import uvicorn

        uvicorn.run(importlib.import_module(module).create_app(), host=args.host, port=args.port, log_level="info")

    return run


def cmd_generator_worker(args: argparse.Namespace) -> None:
    from genview.models.unclip import UnclipGenerator
    from genview.queue import open_queue
    from genview.store import ObjectStore
    from services.generator.app import QUEUE_NAME
    from services.generator.worker import GeneratorWorker
    from services.worker_loop import consumer_name, run_worker

    settings = get_settings()
    generator = UnclipGenerator.load(settings.model, settings.device, settings.model_cache, settings.compile)
    queue = open_queue(settings, QUEUE_NAME)
    worker = GeneratorWorker(settings, generator, queue, ObjectStore.from_settings(settings))
    run_worker(queue, worker.handle, consumer_name("generator"), settings.max_batch_size,
               settings.max_batch_wait_ms, _stop_on_signals())


def cmd_scorer_worker(args: argparse.Namespace) -> None:
    from genview.models.scorer_encoder import ScorerEncoder
    from genview.queue import open_queue
    from genview.scoring import PairScorer
    from genview.store import ObjectStore
    from services.scorer.app import QUEUE_NAME
    from services.scorer.worker import ScorerWorker
    from services.worker_loop import consumer_name, run_worker

    settings = get_settings()
    scorer = PairScorer(ScorerEncoder.load(settings.scorer_model, settings.device, settings.model_cache),
                        settings.max_score_pairs)
    queue = open_queue(settings, QUEUE_NAME)
    worker = ScorerWorker(scorer, queue, ObjectStore.from_settings(settings), settings.basis_refresh_s)
    run_worker(queue, worker.handle, consumer_name("scorer"), settings.max_batch_size,
               settings.max_batch_wait_ms, _stop_on_signals())


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from genview.models.errors import ModelLoadError
    from services.embedded import create_embedded_app

    stop = threading.Event()
    try:
        app = create_embedded_app(get_settings(), stop)
    except ModelLoadError as exc:
        sys.exit(f"genview serve: {exc}")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    finally:
        stop.set()


def cmd_fit_pca(args: argparse.Namespace) -> None:
    from genview.basis import save_basis
    from genview.image_files import list_images
    from genview.pca_fit import fit_basis, sample_paths
    from genview.store import ObjectStore

    settings = get_settings()
    paths = sample_paths(list_images(args.images), args.num, args.seed)
    if not paths:
        sys.exit(f"no images (.png/.jpg/.jpeg/.webp) found in {args.images}")
    if args.encoder == "generator":
        from genview.models.unclip import UnclipGenerator

        model = UnclipGenerator.load(settings.model, settings.device, settings.model_cache)
        dim = model.pipe.image_encoder.config.hidden_size
        encode = lambda images: model.encode(images).tokens  # noqa: E731
    else:
        from genview.models.scorer_encoder import ScorerEncoder

        model = ScorerEncoder.load(settings.scorer_model, settings.device, settings.model_cache)
        dim = model.dim
        encode = lambda images: model.tokens(images)  # noqa: E731
    basis = fit_basis(paths, encode, dim, model.grid, args.fg_fraction or settings.fg_fraction,
                      args.batch_size, settings.max_pixels)
    key = save_basis(ObjectStore.from_settings(settings), model.encoder_id, basis)
    print(f"fitted PCA basis {basis.fingerprint} on {len(paths)} images -> {settings.store_url}/{key}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genview", description="GenView services and tools. "
                                     "Configuration comes from GENVIEW_* environment variables.")
    sub = parser.add_subparsers(dest="command", required=True)
    for service, port in (("generator", 8000), ("scorer", 8001)):
        api = sub.add_parser(f"{service}-api", help=f"run the {service} HTTP API")
        api.add_argument("--host", default="127.0.0.1")
        api.add_argument("--port", type=int, default=port)
        api.set_defaults(func=run_api(f"services.{service}.app"))

    serve = sub.add_parser("serve", help="both APIs and workers in one process (embedded mode)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("generator-worker", help="run a generator GPU worker")
    worker.set_defaults(func=cmd_generator_worker)

    worker = sub.add_parser("scorer-worker", help="run a scorer GPU worker")
    worker.set_defaults(func=cmd_scorer_worker)

    fit = sub.add_parser("fit-pca", help="fit an encoder's PCA foreground basis and store it")
    fit.add_argument("--encoder", choices=["generator", "scorer"], required=True)
    fit.add_argument("--images", required=True, help="folder (recursive), .txt list, or fsspec URL")
    fit.add_argument("--num", type=int, default=10_000, help="images to sample (official: 10,000)")
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--fg-fraction", type=float, default=None, help="share of tokens that are foreground (0.4)")
    fit.set_defaults(func=cmd_fit_pca)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
