"""`genview eval linear|knn|semi` and `genview export` (also `python -m trainer.eval …`).

A protocol's options are torch-free (trainer/eval/options.py); its module (torch, the backbones) is imported only
when the protocol runs, so the command tree and `genview eval <protocol> --help` stay fast."""

from __future__ import annotations

import argparse
import ast
import logging
from functools import partial
from pathlib import Path

from genview.cli import LazyParser

PROTOCOLS = ("linear", "knn", "semi")


def _protocol(name: str):
    """A protocol's module, imported when it is used (plain imports: the layering test sees them)."""
    if name == "linear":
        from trainer.eval import linear as module
    elif name == "knn":
        from trainer.eval import knn as module
    else:
        from trainer.eval import semi as module
    return module


def _docstring(name: str) -> str:
    """A protocol module's docstring, read from its source without importing it."""
    return ast.get_docstring(ast.parse(Path(__file__).with_name(f"{name}.py").read_text()))


def _summary(name: str) -> str:
    """The first line of a protocol module's docstring."""
    return _docstring(name).splitlines()[0].replace("%", "%%")  # argparse %-formats help


def _run_protocol(args: argparse.Namespace) -> None:
    from trainer import dist

    try:
        _protocol(args.protocol).run(args)
    finally:
        if dist.is_distributed():
            import torch.distributed

            torch.distributed.destroy_process_group()


def _export(args: argparse.Namespace) -> None:
    from trainer.eval.backbone import load_backbone
    from trainer.export import SMALL_STEM_RECIPE, export

    loaded = load_backbone(args.checkpoint)
    for path in export(loaded, args.format, Path(args.out)):
        print(path)
    if loaded.stem == "small" and args.format in ("torchvision", "timm"):
        print(SMALL_STEM_RECIPE)


def _protocol_options(name: str, p: argparse.ArgumentParser) -> None:
    from trainer.eval.options import PROTOCOL_OPTIONS

    p.description, p.formatter_class = _docstring(name), argparse.RawDescriptionHelpFormatter
    PROTOCOL_OPTIONS[name](p)
    p.set_defaults(func=_run_protocol)


def _eval_options(ev: argparse.ArgumentParser) -> None:
    protocols = ev.add_subparsers(dest="protocol", required=True, parser_class=LazyParser)
    for name in PROTOCOLS:
        protocols.add_parser(name, help=_summary(name), build=partial(_protocol_options, name))


def _export_options(ex: argparse.ArgumentParser) -> None:
    from trainer.export import FORMATS

    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--out", required=True, help="file (.pth / .pkl), or a folder for safetensors + config.json")
    ex.set_defaults(func=_export)


def register(subparsers) -> None:
    """Add `eval {linear,knn,semi}` and `export` to a command tree (sub-parsers of `LazyParser`)."""
    subparsers.add_parser("eval", help="evaluate a trained backbone (linear probe, kNN, semi-supervised)",
                          build=_eval_options)
    subparsers.add_parser("export", help="write a run's backbone for torchvision, timm, detectron2 or the hub",
                          build=_export_options)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m trainer.eval", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True, parser_class=LazyParser))
    args = parser.parse_args(argv)
    args.func(args)
