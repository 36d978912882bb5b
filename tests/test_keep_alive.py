"""HTTP keep-alive: an API holds an idle connection longer than its clients do, so none sends a request on a
connection the API is closing at that instant (which gets no answer: httpx and uvicorn both waited 5 s)."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx

from genview.settings import Settings
from harness.processes import service_env, start_api

LOAD_BALANCER_IDLE_S = 60  # AWS ALB's default idle timeout; ingress-nginx's upstream keep-alive is 60 s too


def received(sock: socket.socket) -> bytes:
    """The next bytes on `sock`; an error if the peer closed it."""
    data = sock.recv(4096)
    if not data:
        raise ConnectionError("the server closed the connection before its answer was complete")
    return data


def read_response(sock: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length: its head and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += received(sock)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += received(sock)
    return head + b"\r\n\r\n" + body


def test_default_keep_alive_outlasts_the_idle_timeouts_of_clients_and_load_balancers():
    assert Settings().keep_alive_s > max(httpx.Limits().keepalive_expiry, LOAD_BALANCER_IDLE_S)


def test_an_api_keeps_an_idle_connection_open_as_long_as_the_setting_says(redis_url, model_cache, tmp_path):
    keep = 7  # above uvicorn's own default (5 s): a close before it means the setting did not reach uvicorn
    env = service_env(scorer_model="tiny", device="cpu", model_cache=model_cache, redis_url=redis_url,
                      store_url=f"file://{tmp_path / 'store'}", keep_alive_s=str(keep))
    api, base = start_api("scorer-api", env, tmp_path)
    try:
        with socket.create_connection((urlsplit(base).hostname, urlsplit(base).port), timeout=60) as sock:
            for _ in range(2):  # the second request on the same connection is answered too
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                assert read_response(sock).startswith(b"HTTP/1.1 200")
            idle_since = time.monotonic()
            assert sock.recv(1) == b""  # blocks until the API closes the idle connection
            idle = time.monotonic() - idle_since
    finally:
        api.stop()
    assert keep - 0.5 <= idle < 60, idle
