"""`genview eval linear|knn|semi` and `genview export` (also `python -m trainer.eval …`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trainer import dist
from trainer.eval import knn, linear, semi
from trainer.eval.backbone import load_backbone
from trainer.export import FORMATS, SMALL_STEM_RECIPE, export

PROTOCOLS = {"linear": linear, "knn": knn, "semi": semi}


def _run_protocol(args: argparse.Namespace) -> None:
    try:
        PROTOCOLS[args.protocol].run(args)
    finally:
        if dist.is_distributed():
            import torch.distributed

            torch.distributed.destroy_process_group()


def _export(args: argparse.Namespace) -> None:
    loaded = load_backbone(args.checkpoint)
    for path in export(loaded, args.format, Path(args.out)):
        print(path)
    if loaded.stem == "small" and args.format in ("torchvision", "timm"):
        print(SMALL_STEM_RECIPE)


def register(subparsers) -> None:
    """Add `eval {linear,knn,semi}` and `export` to a command tree (argparse sub-parsers)."""
    ev = subparsers.add_parser("eval", help="evaluate a trained backbone (linear probe, kNN, semi-supervised)")
    protocols = ev.add_subparsers(dest="protocol", required=True)
    for name, module in PROTOCOLS.items():
        summary = module.__doc__.splitlines()[0].replace("%", "%%")  # argparse %-formats help (not descriptions)
        p = protocols.add_parser(name, help=summary, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=_run_protocol)
    ex = subparsers.add_parser("export", help="write a run's backbone for torchvision, timm, detectron2 or the hub")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, help="file (.pth / .pkl), or a folder for safetensors + config.json")
    ex.set_defaults(func=_export)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m trainer.eval", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)
