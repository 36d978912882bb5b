"""Concurrent maximum-size `/score/batch` bodies against a real scorer API process: the budget of body bytes in
flight (GENVIEW_MAX_INFLIGHT_BODY_BYTES) admits N of them, bodies go to temporary files instead of memory, and
one more request is answered 503 JSON with Retry-After before its body is read (declared or chunked).

    python -m bench.body_budget --out bench/results/body_budget.json
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from safetensors.numpy import save as save_numpy

from bench.attacks import Api, peak_rss, send_chunked, wait_until

PATH = "/score/batch?timeout=0.01&basis=per-image"  # no worker runs: an accepted batch is answered 202 at once
SIDE = 256
HEAD = 1024 * 1024  # what a held upload sends before it waits


@dataclass
class BodyBudgetResult:
    """What N held maximum-size uploads and one more request met; RSS of the API process in MB."""

    concurrent: int
    body_bytes: int
    admitted_statuses: list[int]
    extra_status: int | None
    extra_error: str | None
    extra_retry_after: str | None
    chunked_status: int | None
    base_rss_mb: float
    peak_rss_mb: float
    rss_rise_mb: float


def max_body(limit: int) -> bytes:
    """The largest raw pairs body (uint8 [N, 2, SIDE, SIDE, 3]) within `limit` bytes."""
    n = (limit - 4096) // (2 * SIDE * SIDE * 3)
    return save_numpy({"pairs": np.random.default_rng(0).integers(0, 256, (n, 2, SIDE, SIDE, 3), dtype=np.uint8)})


def _head(length: int) -> bytes:
    return (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def _reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def held_upload(port: int, body: bytes, gate: threading.Event, answers: list[bytes]) -> None:
    """Send the headers and the first MiB, wait for `gate`, send the rest; append the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=600) as sock:
        sock.sendall(_head(len(body)) + body[:HEAD])
        gate.wait()
        sock.sendall(body[HEAD:])
        answers.append(_reply(sock))


def declared_only(port: int, length: int) -> bytes:
    """Announce `length` bytes, send none; the raw answer (it must come before any body byte)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(_head(length))
        return _reply(sock)


def _in_flight(base: str) -> float:
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    return float(re.search(r"^genview_body_bytes_in_flight (\S+)$", metrics, re.M).group(1))


def _parse(reply: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ", 2)[1]), {k.lower(): v for k, v in headers.items()}, body


def run(workdir: Path, concurrent: int = 8, body_limit: int = 64 * 2**20) -> BodyBudgetResult:
    """Start a scorer API whose budget holds exactly `concurrent` maximum-size bodies and hold that many uploads."""
    body = max_body(body_limit)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GENVIEW_")}, "OMP_NUM_THREADS": "1",
           "GENVIEW_SCORER_MODEL": "tiny", "GENVIEW_DEVICE": "cpu", "GENVIEW_STORE_URL": f"file://{workdir}/store",
           "GENVIEW_MAX_SCORE_BATCH_BYTES": str(body_limit), "GENVIEW_MAX_SCORE_SIDE": str(SIDE),
           "GENVIEW_MAX_INFLIGHT_BODY_BYTES": str(concurrent * len(body))}
    api = Api("scorer-api", env, workdir / "scorer.log")
    gate, answers = threading.Event(), []
    threads = [threading.Thread(target=held_upload, args=(api.port, body, gate, answers)) for _ in range(concurrent)]
    try:
        with peak_rss(api) as rss:
            for thread in threads:
                thread.start()
            wait_until(lambda: _in_flight(api.base) == concurrent * len(body), 120, "the uploads to be admitted")
            status, headers, extra = _parse(declared_only(api.port, len(body)))
            chunked, _ = send_chunked("127.0.0.1", api.port, PATH, {}, offer=4 * HEAD)
            gate.set()
            for thread in threads:
                thread.join()
    finally:
        gate.set()
        api.stop()
    error = json.loads(extra).get("error") if headers.get("content-type") == "application/json" else None
    return BodyBudgetResult(concurrent, len(body), sorted(_parse(a)[0] for a in answers), status, error,
                            headers.get("retry-after"), chunked, round(rss["base_mb"], 1), round(rss["peak_mb"], 1),
                            round(rss["peak_mb"] - rss["base_mb"], 1))


def main() -> None:
    from bench.report import run_main

    run_main(__doc__, lambda workdir, args: run(workdir, args.concurrent),
             {"--concurrent": {"type": int, "default": 8}})


if __name__ == "__main__":
    main()
