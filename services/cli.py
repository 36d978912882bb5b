"""The `genview` console script: composes the library's, the services' and the trainer's commands.

Service commands live here: `generator-api`, `generator-worker`, `scorer-api`, `scorer-worker`, `serve`.
Every process logs one start-up line (role, model, device, queue, store, version). Heavy modules (torch, the
models, FastAPI) are imported inside the commands, so `genview --help` and every `<command> --help` are fast.

Exit codes: 0 done, 1 the command failed while running, 2 a usage error (bad options, a missing or empty input
folder); either failure ends in one line on stderr, with the traceback only under `--debug` or GENVIEW_DEBUG=1.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from urllib.parse import urlsplit

from genview.cli import LazyParser
from genview.errors import UsageError
from genview.settings import Settings, get_settings, package_version

log = logging.getLogger("genview")
PORTS = {"generator": 8000, "scorer": 8001}
QUIET_LOGGERS = ("httpx", "httpcore", "uvicorn.access")
USAGE, FAILED = 2, 1  # exit codes
# The GENVIEW_* settings each service command reads (`serve` reads them all), listed in its --help.
QUEUE_AND_STORE = ("redis_url", "store_url", "s3_endpoint_url", "job_ttl_s", "visibility_timeout_s", "max_deliveries",
                   "retry_backoff_s", "max_pixels", "debug")
READS = {
    "api": QUEUE_AND_STORE + ("port", "api_keys", "metrics_key", "public_base_url", "max_queue_depth", "access_log",
                              "max_upload_bytes", "max_wait_s", "min_fit_images"),
    "worker": QUEUE_AND_STORE + ("device", "model_cache", "max_batch_size", "max_batch_wait_ms", "heartbeat_file",
                                 "worker_metrics_port", "fg_fraction"),
    "generator": ("model",),
    "generator-worker": ("compile", "encode_threads", "view_format", "view_quality"),
    "scorer": ("scorer_model",),
    "scorer-api": ("max_score_pairs", "max_score_side", "score_timeout_s"),
}


def _where(url: str | None, default: str) -> str:
    """A URL without credentials, for logs."""
    if not url:
        return default
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def startup_line(role: str, settings: Settings) -> str:
    """What a process says first: its role, model, device, queue, store and version."""
    from genview.models.device import resolve_device

    model = settings.scorer_model if role.startswith("scorer") else settings.model
    if role == "serve":
        model = f"{settings.model} + {settings.scorer_model}"
    return (f"genview {role}: model {model}, device {resolve_device(settings.device)}, "
            f"queue {_where(settings.redis_url, 'in-memory')}, store {_where(settings.store_url, '')}, "
            f"version {package_version()}")


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM/SIGINT, so workers finish their batch and exit cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def checked_access(settings: Settings, host: str, role: str) -> str:
    """Who may call an API on `host` (for its start-up line); exits with a one-line error instead when it would
    serve without keys where it must not (services/auth.py)."""
    from services.auth import access_mode, anonymous_refusal

    refusal = anonymous_refusal(settings, host)
    if refusal:
        sys.exit(f"genview {role}: {refusal}")
    return access_mode(settings, host)


def _serve_http(app, args: argparse.Namespace, settings: Settings, default_port: int) -> None:
    """Serve on --port, else GENVIEW_PORT, else the command's default port."""
    import uvicorn

    port = getattr(args, "port", None) or settings.port or default_port
    uvicorn.run(app, host=args.host, port=port, log_level="info", access_log=settings.access_log,
                timeout_keep_alive=settings.keep_alive_s)


def create_app(service: str, settings: Settings):
    """The HTTP app of one service (imported here, on use: the other commands need no FastAPI)."""
    if service == "generator":
        from services.generator.app import create_app as create_generator_app

        return create_generator_app(settings)
    from services.scorer.app import create_app as create_scorer_app

    return create_scorer_app(settings)


def build_worker(service: str, settings: Settings):
    """The worker of one service, with its model loaded."""
    if service == "generator":
        from services.generator.wiring import build_worker as build_generator_worker

        return build_generator_worker(settings)
    from services.scorer.wiring import build_worker as build_scorer_worker

    return build_scorer_worker(settings)


def api_command(service: str):
    """`genview {service}-api`: the HTTP API of one service."""

    def run(args: argparse.Namespace) -> None:
        settings = get_settings()
        access = checked_access(settings, args.host, f"{service}-api")
        log.info(f"{startup_line(f'{service}-api', settings)}, {access}")
        _serve_http(create_app(service, settings), args, settings, PORTS[service])

    return run


def worker_command(service: str):
    """`genview {service}-worker`: one worker process of a service (the same `build_worker` as `serve`)."""

    def run(args: argparse.Namespace) -> None:
        settings = get_settings()
        log.info(startup_line(f"{service}-worker", settings))
        worker = build_worker(service, settings)
        if settings.worker_metrics_port and worker.registry is not None:
            from prometheus_client import start_http_server

            start_http_server(settings.worker_metrics_port, registry=worker.registry)
        worker.run(settings, _stop_on_signals())

    return run


def cmd_serve(args: argparse.Namespace) -> None:
    from services.embedded import create_embedded_app, serving_settings

    settings, fallback = serving_settings(get_settings())
    access = checked_access(settings, args.host, "serve")
    note = f" (tiny random models, meaningless pictures: {fallback}; README 'Real weights')" if fallback else ""
    log.info(f"{startup_line('serve', settings)}, {access}{note}")
    stop = threading.Event()
    app = create_embedded_app(settings, stop)
    try:
        _serve_http(app, args, settings, PORTS["generator"])
    finally:
        stop.set()


def settings_epilog(names: tuple[str, ...]) -> str:
    """The environment variables behind `names` (fields of genview.settings.Settings), their defaults and meaning."""
    lines = ["environment (GENVIEW_*, defaults in brackets):"]
    for name in names:
        field = Settings.model_fields[name]
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default in (None, "") else default
        lines.append(f"  GENVIEW_{name.upper()} [{shown}]: {field.description}")
    return "\n".join(lines)


def reads(command: str) -> tuple[str, ...]:
    """The settings a service command reads (`generator-api` → api + generator + generator-api)."""
    if command == "serve":
        return tuple(Settings.model_fields)
    service, role = command.split("-")
    return READS[role] + READS[service] + READS.get(command, ())


def register(sub: argparse._SubParsersAction) -> None:
    """The service commands."""
    for service, port in PORTS.items():
        api = sub.add_parser(f"{service}-api", help=f"run the {service} HTTP API",
                             epilog=settings_epilog(reads(f"{service}-api")))
        api.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
        api.add_argument("--port", type=int, default=argparse.SUPPRESS,
                         help=f"port to listen on (default: GENVIEW_PORT, else {port})")
        api.set_defaults(func=api_command(service))
        worker = sub.add_parser(f"{service}-worker", help=f"run a {service} worker (GPU when available)",
                                epilog=settings_epilog(reads(f"{service}-worker")))
        worker.set_defaults(func=worker_command(service))
    serve = sub.add_parser("serve", help="both APIs and workers in one process (embedded mode)",
                           epilog=settings_epilog(reads("serve")))
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=argparse.SUPPRESS,
                       help=f"port to listen on (default: GENVIEW_PORT, else {PORTS['generator']})")
    serve.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree: library, services, the batch engine's options and the trainer's eval/export."""
    from genview import cli as library
    from genview.batch import cli as batch
    from trainer.eval import cli as trainer_eval

    parser = argparse.ArgumentParser(prog="genview", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="GenView services and tools. Configuration comes from GENVIEW_* "
                                     "environment variables (`genview <command> --help` lists them).",
                                     epilog=__doc__.split("\n\n")[-1])
    parser.add_argument("--version", action="version", version=f"genview {package_version()}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error (or GENVIEW_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=LazyParser)
    library.register(sub)
    register(sub)
    batch.register(sub)
    trainer_eval.register(sub)
    return parser


def _debugging(args: argparse.Namespace) -> bool:
    try:
        return args.debug or get_settings().debug
    except Exception:  # invalid GENVIEW_* values: the error itself is reported by the caller
        return args.debug


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; an error becomes one line on stderr and exit code 2 (usage) or 1 (runtime)."""
    try:
        args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if _debugging(args):
            raise
        usage = isinstance(exc, UsageError)
        what = " ".join(str(exc).split()) or type(exc).__name__
        hint = "" if usage else f" ({type(exc).__name__}; --debug or GENVIEW_DEBUG=1 shows the traceback)"
        print(f"genview {args.command}: {what}{hint}", file=sys.stderr)
        return USAGE if usage else FAILED
    return 0


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    sys.exit(run_command(build_parser().parse_args(argv)))


if __name__ == "__main__":
    main()
