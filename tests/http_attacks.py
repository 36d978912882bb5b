"""Raw-socket clients for attacks an HTTP library would not send (endless chunked bodies), and an app served
by a real uvicorn in a thread of the test process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import uvicorn

from tests.helpers import free_port, wait_for_port


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


MULTIPART_FILE_START = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                        b"Content-Type: image/png\r\n\r\n")
MULTIPART = "multipart/form-data; boundary=x"


def send_chunked(host: str, port: int, path: str, headers: dict[str, str], offer: int, prefix: bytes = b"",
                 chunk: int = 1 << 16, timeout_s: float = 60.0) -> tuple[int | None, int]:
    """POST a chunked body (`prefix`, then zeros) of up to `offer` bytes until the server answers or closes;
    returns (status, bytes sent)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, "Transfer-Encoding": "chunked",
                                                  "Content-Type": "application/octet-stream", **headers}.items())
    sent, status = 0, None
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + f"{len(prefix):x}\r\n".encode() + prefix
                     + b"\r\n" if prefix else f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        sock.setblocking(False)
        frame = f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
        while sent < offer and time.monotonic() < deadline:
            try:
                reply = sock.recv(4096)
                if reply:
                    status = int(reply.split(b" ", 2)[1])
                break  # an answer or a close: the server stopped reading
            except BlockingIOError:
                pass
            try:
                sock.send(frame)
                sent += chunk
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        if status is None:
            sock.setblocking(True)
            with contextlib.suppress(OSError):
                reply = sock.recv(4096)
                status = int(reply.split(b" ", 2)[1]) if reply else None
    return status, sent
