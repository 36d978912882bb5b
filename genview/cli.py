"""The library's `genview` commands (fit-pca, generate-dataset, gallery); the console script composes them
with the service and trainer commands (services/cli.py)."""

from __future__ import annotations

import argparse
import sys

from genview.settings import get_settings


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


def register(sub: argparse._SubParsersAction) -> None:
    """The library's commands: fit-pca, generate-dataset (the service engine), gallery."""
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
