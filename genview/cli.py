"""The library's `genview` commands (fit-pca, generate-dataset, gallery); the console script composes them
with the service and trainer commands (services/cli.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from genview.errors import UsageError
from genview.settings import get_settings


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default and keeps descriptions and epilogs as written."""


class LazyParser(argparse.ArgumentParser):
    """A command's parser whose options (and the modules that define them) are added only when that command is
    parsed: `genview --help` lists every command without importing torch (`build(parser)` adds the options)."""

    def __init__(self, *args, build: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._build = build

    def parse_known_args(self, args=None, namespace=None):
        if self._build is not None:
            build, self._build = self._build, None
            build(self)
        return super().parse_known_args(args, namespace)


def cmd_fit_pca(args: argparse.Namespace) -> None:
    from genview.image_files import require_images

    if args.import_official and not (args.vectors and args.mean):
        raise UsageError("--import-official needs --vectors pca_vectors.npy and --mean mean_vectors.npy")
    imported = args.import_official and args.threshold is not None
    if not imported and not args.images:
        raise UsageError("--images is needed to fit a basis (or to calibrate an imported one without --threshold)")
    images = None if imported else require_images(args.images)  # checked before the heavy imports below

    from genview.basis import DEFAULT_OWNER, BasisStore
    from genview.pca_fit import fit_basis, import_official, sample_paths, threshold_on_images
    from genview.store import ObjectStore

    settings = get_settings()
    fg_fraction = args.fg_fraction or settings.fg_fraction
    if imported:
        from genview.models.presets import encoder_id

        basis, count = import_official(args.vectors, args.mean, args.threshold), 0
        model_id = encoder_id(args.encoder, settings.model if args.encoder == "generator" else settings.scorer_model)
    else:
        paths = sample_paths(images, args.num, args.seed)
        if args.encoder == "generator":
            from genview.models.unclip import UnclipGenerator

            model = UnclipGenerator.load(settings.model, settings.device, settings.model_cache)
        else:
            from genview.models.scorer_encoder import ScorerEncoder

            model = ScorerEncoder.load(settings.scorer_model, settings.device, settings.model_cache)
        if args.import_official:
            basis = threshold_on_images(import_official(args.vectors, args.mean, 0.0), paths, model, fg_fraction,
                                        args.batch_size, settings.max_pixels)
        else:
            basis = fit_basis(paths, model.tokens, model.dim, model.grid, fg_fraction, args.batch_size,
                              settings.max_pixels)
        model_id, count = model.encoder_id, len(paths)
    basis_id = BasisStore(ObjectStore.from_settings(settings), model_id).save(basis, DEFAULT_OWNER, images=count)
    how = "imported" if args.import_official else "fitted"
    print(f"{how} PCA basis {basis_id} (threshold {basis.threshold:.6g}, {count} images), published as the default "
          f"basis of {model_id} in {settings.store_url}")


def cmd_generate_dataset(args: argparse.Namespace) -> None:
    from genview.image_files import require_source

    require_source(args.images)  # before the heavy imports; an empty folder is refused before any request
    from genview.client import GeneratorClient
    from genview.dataset_gen import ensure_basis, generate_dataset, manifest_views
    from genview.method.noise import parse_noise_policy
    from genview.official import export_official

    retries = {} if args.retries is None else {"retries": args.retries}
    client = GeneratorClient(args.generator_url, api_key=args.api_key, **retries)
    policy = "auto:per-image" if args.no_fit and args.noise_policy == "adaptive" else args.noise_policy
    if parse_noise_policy(policy) == parse_noise_policy("adaptive") and not args.levels_from:
        ensure_basis(client, args.images, args.fit_num, args.seed)
    stats = generate_dataset(args.images, client, args.manifest, noise_policy=parse_noise_policy(policy),
                             num_views=args.num_views, seed=args.seed, steps=args.steps, size=args.size,
                             concurrency=args.concurrency, levels_from=args.levels_from)
    print(f"{stats['submitted']} of {stats['images']} images generated in {stats['seconds']:.1f} s -> {args.manifest}")
    if args.export_official:
        n = export_official(manifest_views(args.manifest, client), args.export_official)
        print(f"exported {n} views and fg_ratios.txt to {args.export_official}")


def cmd_gallery(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    if not Path(args.manifest).is_file():
        raise UsageError(f"no manifest {args.manifest}: write one with `genview generate-dataset`")
    from genview.gallery import render_grid
    from genview.image_files import read_bytes
    from genview.store import ObjectStore

    rows = [json.loads(line) for line in Path(args.manifest).read_text().splitlines() if line.strip()][:args.limit]
    store = ObjectStore.from_settings(get_settings())
    grid = render_grid(rows, store, lambda row: read_bytes(f"{args.images.rstrip('/')}/{row['path']}"), args.thumb)
    grid.save(args.out)
    print(f"{len(rows)} images -> {args.out}")


def cmd_make_synthetic(args: argparse.Namespace) -> None:
    from pathlib import Path

    from genview.synthetic import SyntheticSpec, write_image_folder

    counts = {"train": args.train, "val": args.val}
    n = write_image_folder(Path(args.out), args.seed, counts, SyntheticSpec(size=args.size))
    print(f"{n} images in {args.out}/{{train,val}}/<class>/, foreground masks in {args.out}/masks/")


def register(sub: argparse._SubParsersAction) -> None:
    """The library's commands: fit-pca, generate-dataset (the service engine), gallery, make-synthetic."""
    fit = sub.add_parser("fit-pca", help="fit (or import) an encoder's PCA foreground basis and publish it as the "
                         "default version: the operator's, read-only to tenants, used by those without their own")
    fit.add_argument("--encoder", choices=["generator", "scorer"], required=True)
    fit.add_argument("--images", help="folder (recursive), .txt list, or fsspec URL")
    fit.add_argument("--num", type=int, default=10_000, help="images to sample (official: 10,000)")
    fit.add_argument("--batch-size", type=int, default=16)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--fg-fraction", type=float, default=None, help="share of tokens that are foreground (0.4)")
    fit.add_argument("--import-official", action="store_true",
                     help="import the official repository's PCA (--vectors, --mean, --threshold or --images)")
    fit.add_argument("--vectors", help="pca_vectors.npy of the official code (row 0: first component)")
    fit.add_argument("--mean", help="mean_vectors.npy of the official code")
    fit.add_argument("--threshold", type=float, default=None,
                     help="threshold a on the raw projections; without it, calibrated on --images (--fg-fraction)")
    fit.set_defaults(func=cmd_fit_pca)

    gen = sub.add_parser("generate-dataset", help="generate every image's views once, into a resumable manifest")
    gen.add_argument("--images", required=True, help="folder (recursive), .txt list, or fsspec URL")
    gen.add_argument("--generator-url", required=True)
    gen.add_argument("--manifest", required=True, help="JSON lines, one row per image (appended, resumable)")
    gen.add_argument("--noise-policy", default="adaptive", help="adaptive | auto:per-image | random | constant:L")
    gen.add_argument("--num-views", type=int, default=1)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--steps", type=int, default=20)
    gen.add_argument("--size", type=int, default=512)
    gen.add_argument("--concurrency", type=int, default=8)
    gen.add_argument("--fit-num", type=int, default=10_000, help="images sampled to fit the PCA basis")
    gen.add_argument("--no-fit", action="store_true", help="never fit a basis: adaptive becomes auto:per-image")
    gen.add_argument("--levels-from", help="fg_ratios.txt computed elsewhere: its levels are used as given")
    gen.add_argument("--export-official", metavar="DIR", help="also write the official repository's layout")
    gen.add_argument("--api-key", default=None)
    gen.add_argument("--retries", type=int, default=None,
                     help="retries of a failed request, with doubling backoff, before the command stops "
                     "(default: the client's)")
    gen.set_defaults(func=cmd_generate_dataset)

    gallery = sub.add_parser("gallery", help="a contact sheet: original, foreground map, views, fg ratio, level")
    gallery.add_argument("--manifest", required=True)
    gallery.add_argument("--images", required=True, help="the folder the manifest's paths are relative to")
    gallery.add_argument("--out", required=True, help="PNG file to write")
    gallery.add_argument("--limit", type=int, default=32)
    gallery.add_argument("--thumb", type=int, default=160)
    gallery.set_defaults(func=cmd_gallery)

    synth = sub.add_parser("make-synthetic", help="draw the seeded shapes benchmark into ImageFolder train/val splits")
    synth.add_argument("--out", required=True)
    synth.add_argument("--train", type=int, default=2000)
    synth.add_argument("--val", type=int, default=500)
    synth.add_argument("--size", type=int, default=32)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_make_synthetic)
