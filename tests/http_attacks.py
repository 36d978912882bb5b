"""An app served by a real uvicorn in a thread of the test process (for attacks TestClient cannot send, e.g.
endless chunked bodies: bench.attacks.send_chunked)."""

from __future__ import annotations

import contextlib
import threading

import uvicorn

from harness.ports import free_port, wait_for_port


@contextlib.contextmanager
def serve_in_thread(app):
    """Serve `app` with uvicorn on a free port until the block ends; yields (host, port)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port(port)
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(30)


