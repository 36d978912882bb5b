"""`genview generate-dataset --engine service|ray`: the options each engine needs (no Ray started here)."""

from __future__ import annotations

import pytest

from genview.batch.cli import config_from_args
from genview.method.noise import parse_noise_policy
from services.cli import build_parser


def parse(*argv: str):
    return build_parser().parse_args(["generate-dataset", *argv])


@pytest.mark.parametrize("argv, message", [
    (["--engine", "ray", "--images", "imgs"], "--engine ray needs --shards OUT_URL"),
    (["--images", "imgs", "--manifest", "m.jsonl"], "--engine service needs --generator-url"),
])
def test_each_engine_asks_for_its_own_options(argv, message, capsys):
    args = parse(*argv)
    with pytest.raises(SystemExit) as exit_info:
        args.func(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_ray_config_follows_the_command_line_and_settings(monkeypatch):
    monkeypatch.setenv("GENVIEW_DEVICE", "cpu")
    from genview.settings import get_settings

    get_settings.cache_clear()
    try:
        config = config_from_args(parse("--engine", "ray", "--images", "imgs", "--shards", "s3://b/shards",
                                        "--actors", "3", "--batch-size", "4", "--no-fit", "--no-originals"))
    finally:
        get_settings.cache_clear()
    assert (config.concurrency, config.batch_size, config.gpus_per_actor) == (3, 4, 0.0)
    assert config.noise_policy == parse_noise_policy("auto:per-image") and not config.with_originals  # --no-fit as with the service
    assert config.settings.device == "cpu" and config.shards == "s3://b/shards"
