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


def cmd_generate_dataset(args: argparse.Namespace) -> None:
    from genview.basis import BasisCache
    from genview.client import GeneratorClient
    from genview.dataset_gen import export_official, generate_dataset, wait_for_basis
    from genview.models.presets import encoder_id
    from genview.store import ObjectStore

    settings = get_settings()
    client = GeneratorClient(args.generator_url, api_key=args.api_key)
    if args.noise_policy == "adaptive" and not args.levels_from and not args.no_fit:
        store = ObjectStore.from_settings(settings)
        if BasisCache(store, encoder_id("generator", settings.model)).current() is None:
            args_fit = argparse.Namespace(encoder="generator", images=args.images, num=args.fit_num, seed=args.seed,
                                          batch_size=16, fg_fraction=None)
            cmd_fit_pca(args_fit)
        wait_for_basis(client, BasisCache(store, encoder_id("generator", settings.model)).fingerprint())
    stats = generate_dataset(args.images, client, args.manifest, noise_policy=args.noise_policy,
                             num_views=args.num_views, seed=args.seed, steps=args.steps, size=args.size,
                             concurrency=args.concurrency, levels_from=args.levels_from)
    print(f"{stats['submitted']} of {stats['images']} images generated in {stats['seconds']:.1f} s -> {args.manifest}")
    if args.export_official:
        n = export_official(args.manifest, client, args.export_official)
        print(f"exported {n} views and fg_ratios.txt to {args.export_official}")


def cmd_gallery(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from genview.gallery import render_grid
    from genview.image_files import read_bytes
    from genview.store import ObjectStore

    rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()][:args.limit]
    store = ObjectStore.from_settings(get_settings())
    grid = render_grid(rows, store, lambda row: read_bytes(f"{args.images.rstrip('/')}/{row['path']}"), args.thumb)
    grid.save(args.out)
    print(f"{len(rows)} images -> {args.out}")


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

    gen = sub.add_parser("generate-dataset", help="generate every image's views once, into a resumable manifest")
    gen.add_argument("--images", required=True, help="folder (recursive), .txt list, or fsspec URL")
    gen.add_argument("--generator-url", required=True)
    gen.add_argument("--manifest", required=True, help="JSON lines, one row per image (appended, resumable)")
    gen.add_argument("--noise-policy", default="adaptive", help="adaptive | random | constant:L")
    gen.add_argument("--num-views", type=int, default=1)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--size", type=int, default=512)
    gen.add_argument("--concurrency", type=int, default=8)
    gen.add_argument("--fit-num", type=int, default=10_000, help="images sampled to fit the PCA basis")
    gen.add_argument("--no-fit", action="store_true", help="never fit a basis (per-image fallback)")
    gen.add_argument("--levels-from", help="fg_ratios.txt computed elsewhere: its levels are used as given")
    gen.add_argument("--export-official", metavar="DIR", help="also write the official repository's layout")
    gen.add_argument("--api-key", default=None)
    gen.set_defaults(func=cmd_generate_dataset)

    gallery = sub.add_parser("gallery", help="a contact sheet: original, foreground map, views, fg ratio, level")
    gallery.add_argument("--manifest", required=True)
    gallery.add_argument("--images", required=True, help="the folder the manifest's paths are relative to")
    gallery.add_argument("--out", required=True, help="PNG file to write")
    gallery.add_argument("--limit", type=int, default=32)
    gallery.add_argument("--thumb", type=int, default=160)
    gallery.set_defaults(func=cmd_gallery)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
