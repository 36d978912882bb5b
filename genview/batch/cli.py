"""`genview generate-dataset --engine ray …`: the Ray Data engine's options, added to the library's command.

`register(sub)` runs after the library registered `generate-dataset` (the service engine): it adds `--engine`
and the Ray options to that parser and dispatches on the engine. Ray is imported only when it runs.
"""

from __future__ import annotations

import argparse

from genview.settings import get_settings

SERVICE_ONLY = ("generator_url", "manifest")  # required by the service engine, unused by the Ray engine


def add_ray_arguments(gen: argparse.ArgumentParser) -> None:
    """The options of the Ray engine."""
    ray = gen.add_argument_group("--engine ray (Ray Data → WebDataset shards + parquet index)")
    ray.add_argument("--shards", metavar="OUT_URL", help="output folder or fsspec URL (s3://…) of the shards")
    ray.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start Ray locally)")
    ray.add_argument("--actors", type=int, default=1, help="generator actors (one model each; one GPU each on GPU)")
    ray.add_argument("--batch-size", type=int, default=8, help="images per model call on one actor")
    ray.add_argument("--images-per-shard", type=int, default=1000)
    ray.add_argument("--gpus-per-actor", type=float, default=None,
                     help="default: 0 when GENVIEW_DEVICE=cpu, else 1")
    ray.add_argument("--no-originals", action="store_true",
                     help="leave the input images out of the shards (the trainer then reads them from --data)")
    ray.add_argument("--num-cpus", type=int, default=None, help="local Ray only: CPUs it may use")
    ray.add_argument("--object-store-mb", type=int, default=None, help="local Ray only: object store size")


def config_from_args(args: argparse.Namespace):
    """The RayGenerationConfig of the command line (settings from GENVIEW_* variables)."""
    from genview.batch.ray_generate import RayGenerationConfig

    settings = get_settings()
    gpus = args.gpus_per_actor if args.gpus_per_actor is not None else (0.0 if settings.device == "cpu" else 1.0)
    # --no-fit: adaptive becomes the per-image estimate, as with --engine service
    policy = "auto:per-image" if args.no_fit and args.noise_policy == "adaptive" else args.noise_policy
    return RayGenerationConfig(images=args.images, shards=args.shards, settings=settings, noise_policy=policy,
                               num_views=args.num_views, seed=args.seed, steps=args.steps, size=args.size,
                               images_per_shard=args.images_per_shard, batch_size=args.batch_size,
                               concurrency=args.actors, gpus_per_actor=gpus, fit_num=args.fit_num,
                               with_originals=not args.no_originals)


def run_ray(args: argparse.Namespace) -> None:
    from genview.batch.interop import shard_views
    from genview.batch.ray_generate import generate_shards, start_ray
    from genview.official import export_official

    import ray

    config = config_from_args(args)
    start_ray(args.ray_address, args.num_cpus, args.object_store_mb)
    try:
        stats = generate_shards(config)
    finally:
        ray.shutdown()  # a local Ray stops with its actors; a cluster keeps running
    print(f"{stats.images} images in {stats.shards} shards ({len(stats.shards_written)} written now) "
          f"in {stats.seconds:.1f} s -> {config.shards}")
    if args.export_official:
        n = export_official(shard_views(config.shards), args.export_official)
        print(f"exported {n} views and fg_ratios.txt to {args.export_official}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `--engine service|ray` and the Ray options to `generate-dataset`."""
    gen = sub.choices["generate-dataset"]
    service = gen.get_default("func")
    dests = {a.dest for a in gen._actions}
    if "engine" not in dests:
        gen.add_argument("--engine", choices=["service", "ray"], default="service",
                         help="service: through the generator API into a manifest; ray: Ray Data into shards")
    for action in gen._actions:
        if action.dest in SERVICE_ONLY:
            action.required = False
    add_ray_arguments(gen)

    def dispatch(args: argparse.Namespace) -> None:
        if args.engine == "ray":
            if not args.shards:
                gen.error("--engine ray needs --shards OUT_URL")
            return run_ray(args)
        missing = [f"--{d.replace('_', '-')}" for d in SERVICE_ONLY if not getattr(args, d)]
        if missing:
            gen.error(f"--engine service needs {' and '.join(missing)}")
        return service(args)

    gen.set_defaults(func=dispatch)
