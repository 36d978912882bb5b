"""The `genview` console script: composes the library's, the services' and the trainer's commands.

Service commands live here: `generator-api`, `generator-worker`, `scorer-api`, `scorer-worker`, `serve`.
Every process logs one start-up line (role, model, device, queue, store, version)."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from urllib.parse import urlsplit

from genview.settings import Settings, get_settings, package_version

log = logging.getLogger("genview")
PORTS = {"generator": 8000, "scorer": 8001}
# Other owners' command groups, registered when their module is present: (module, function).
EXTRA_COMMANDS = [("genview.batch.cli", "register"), ("trainer.eval.cli", "register")]
QUIET_LOGGERS = ("httpx", "httpcore", "uvicorn.access")


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


def _serve_http(app, args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=settings.access_log)


def api_command(service: str):
    """`genview {service}-api`: the HTTP API of one service."""

    def run(args: argparse.Namespace) -> None:
        settings = get_settings()
        access = checked_access(settings, args.host, f"{service}-api")
        log.info(f"{startup_line(f'{service}-api', settings)}, {access}")
        _serve_http(importlib.import_module(f"services.{service}.app").create_app(settings), args, settings)

    return run


def worker_command(service: str):
    """`genview {service}-worker`: one worker process of a service (the same `build_worker` as `serve`)."""

    def run(args: argparse.Namespace) -> None:
        settings = get_settings()
        log.info(startup_line(f"{service}-worker", settings))
        worker = importlib.import_module(f"services.{service}.wiring").build_worker(settings)
        if settings.worker_metrics_port and worker.registry is not None:
            from prometheus_client import start_http_server

            start_http_server(settings.worker_metrics_port, registry=worker.registry)
        worker.run(settings, _stop_on_signals())

    return run


def cmd_serve(args: argparse.Namespace) -> None:
    from genview.models.errors import ModelLoadError
    from services.embedded import create_embedded_app, serving_settings

    settings, fallback = serving_settings(get_settings())
    access = checked_access(settings, args.host, "serve")
    note = f" (tiny random models, meaningless pictures: {fallback}; README 'Real weights')" if fallback else ""
    log.info(f"{startup_line('serve', settings)}, {access}{note}")
    stop = threading.Event()
    try:
        app = create_embedded_app(settings, stop)
    except ModelLoadError as exc:
        sys.exit(f"genview serve: {exc}")
    try:
        _serve_http(app, args, settings)
    finally:
        stop.set()


def register(sub: argparse._SubParsersAction) -> None:
    """The service commands."""
    for service, port in PORTS.items():
        api = sub.add_parser(f"{service}-api", help=f"run the {service} HTTP API")
        api.add_argument("--host", default="127.0.0.1")
        api.add_argument("--port", type=int, default=port)
        api.set_defaults(func=api_command(service))
        worker = sub.add_parser(f"{service}-worker", help=f"run a {service} worker (GPU when available)")
        worker.set_defaults(func=worker_command(service))
    serve = sub.add_parser("serve", help="both APIs and workers in one process (embedded mode)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=PORTS["generator"])
    serve.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree: library, services, and whatever trainer/batch command groups are installed."""
    from genview import cli as library

    parser = argparse.ArgumentParser(prog="genview", description="GenView services and tools. "
                                     "Configuration comes from GENVIEW_* environment variables.")
    parser.add_argument("--version", action="version", version=f"genview {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    library.register(sub)
    register(sub)
    for module, function in EXTRA_COMMANDS:
        try:
            extra = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):  # that group is not there (yet): skip it
                continue
            raise
        getattr(extra, function)(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
