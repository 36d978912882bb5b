"""Attacks on the real API processes, each with its expected answer and the API's peak memory.

Starts `genview generator-api` and `genview scorer-api` (tiny presets, file store; the APIs alone: no
worker is needed to be attacked) plus a generator API on a private Redis that is stopped mid-run, sends
each attack, and records the status, the error code, the peak RSS above the process's baseline and
whether the service still answers `/healthz` afterwards.

    python -m bench.attacks --out bench/results/attack_catalogue.json --markdown bench/results/attack_catalogue.md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image
from safetensors.numpy import save as save_numpy

from harness.ports import free_port
from harness.processes import terminate

KEYS = {"a": "attack-key-a", "b": "attack-key-b"}
MULTIPART = "multipart/form-data; boundary=x"
MULTIPART_FILE_START = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                        b"Content-Type: image/png\r\n\r\n")
RSS_LIMIT_MB = 300
PER_IMAGE_SCORES = {"basis": "per-image"}  # scoring without a fitted basis, asked for by name


# --- crafted bodies -------------------------------------------------------------------------------------

def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`×`height` with a tiny (too short) image stream."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        _chunk(b"IEND", b"")


def ztxt_bomb() -> bytes:
    """A valid 64×64 PNG carrying a zTXt chunk that inflates to 200 MB."""
    base = png(64, 64)
    bomb = _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 200_000_000, 9))
    return base[:33] + bomb + base[33:]


def pairs_body(n: int, side: int, dtype=np.uint8) -> bytes:
    return save_numpy({"pairs": np.zeros((n, 2, side, side, 3), dtype=dtype)})


# --- processes ------------------------------------------------------------------------------------------

def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise TimeoutError(what)


class Api:
    """A `genview <role>` process on a free port."""

    def __init__(self, role: str, env: dict[str, str], log: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "services.cli", role, "--port", str(self.port)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        with httpx.Client(timeout=2) as client:
            wait_until(lambda: client.get(f"{self.base}/healthz").status_code == 200, 300, f"{role} start")
        self.ps = psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        terminate(self.proc, 30)
        self.log.close()


@contextlib.contextmanager
def peak_rss(api: Api):
    """Samples the process's RSS every 5 ms while the block runs; yields a dict that gets `peak_mb`."""
    out = {"base_mb": api.rss_mb(), "peak_mb": 0.0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                out["peak_mb"] = max(out["peak_mb"], api.rss_mb())
            done.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        out["peak_mb"] = max(out["peak_mb"], api.rss_mb())


def send_chunked(host: str, port: int, path: str, headers: dict[str, str], offer: int, prefix: bytes = b"",
                 chunk: int = 1 << 16, timeout_s: float = 120.0) -> tuple[int | None, int]:
    """POST a chunked body (`prefix`, then zeros) of up to `offer` bytes until the server answers or closes;
    returns (status, bytes sent). An HTTP library would send it all before reading the answer."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, "Transfer-Encoding": "chunked",
                                                  "Content-Type": "application/octet-stream", **headers}.items())
    start = f"POST {path} HTTP/1.1\r\n{head}\r\n".encode()
    if prefix:
        start += f"{len(prefix):x}\r\n".encode() + prefix + b"\r\n"
    sent, status = 0, None
    deadline = time.monotonic() + timeout_s
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(start)
        sock.setblocking(False)
        frame = f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
        pending = memoryview(b"")
        while (sent < offer or pending) and time.monotonic() < deadline:
            try:
                reply = sock.recv(4096)
                if reply:
                    status = int(reply.split(b" ", 2)[1])
                break  # an answer or a close: the server stopped reading
            except BlockingIOError:
                pass
            if not pending:
                pending, sent = memoryview(frame), sent + chunk
            try:
                pending = pending[sock.send(pending):]
            except BlockingIOError:
                time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                break
        if status is None:
            sock.setblocking(True)
            with contextlib.suppress(OSError, IndexError, ValueError):
                reply = sock.recv(4096)
                status = int(reply.split(b" ", 2)[1]) if reply else None
    return status, sent


def send_declared(port: int, path: str, headers: dict[str, str], length: int) -> tuple[int | None, int]:
    """POST announcing `length` bytes but sending none: the answer must come before any body (status, 0)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": "127.0.0.1", "Content-Length": str(length),
                                                  "Content-Type": MULTIPART, **headers}.items())
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        reply = sock.recv(4096)
    return (int(reply.split(b" ", 2)[1]) if reply else None), 0


# --- the catalogue --------------------------------------------------------------------------------------

@dataclass
class Outcome:
    attack: str
    category: str
    target: str
    expected: list[int]
    status: int | None = None
    error: str | None = None
    json_body: bool = False
    base_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    rss_delta_mb: float = 0.0
    up_after: bool = False
    note: str = ""
    ok: bool = field(default=False)


def _answer(response: httpx.Response) -> tuple[int, str | None, bool]:
    try:
        return response.status_code, response.json().get("error"), True
    except ValueError:
        return response.status_code, None, False


def catalogue(gen: Api, score: Api, gen_redis: Api, redis: subprocess.Popen) -> list[Outcome]:
    """Every attack class, in order; the Redis outage runs last (it stops that Redis)."""
    a, b = {"X-API-Key": KEYS["a"]}, {"X-API-Key": KEYS["b"]}
    fields = {"noise_level": "auto:per-image", "steps": "2", "size": "32"}

    def gen_post(image: bytes, headers=a, data=None):
        return lambda c: c.post(f"{gen.base}/generate", headers=headers, files={"image": ("x.png", image)},
                                data=data or fields)

    def score_post(image: bytes):
        return lambda c: c.post(f"{score.base}/score", headers=a, params=PER_IMAGE_SCORES,
                                files={"original": ("o.png", image), "view": ("v.png", png(64, 64))})

    def batch(body: bytes):
        return lambda c: c.post(f"{score.base}/score/batch", headers=a, params=PER_IMAGE_SCORES, content=body)

    def chunked(api: Api, path: str, offer: int, prefix: bytes = b"", content_type: str = "application/octet-stream"):
        def run(_):
            status, sent = send_chunked("127.0.0.1", api.port, path, {**a, "Content-Type": content_type},
                                        offer, prefix)
            return status, sent
        return run

    job_of_a: dict[str, str] = {}

    def tenant_b_reads_a(c):
        r = c.post(f"{gen.base}/generate", headers=a, files={"image": ("x.png", png(40, 40))}, data=fields)
        job_of_a["id"] = r.json()["job_id"]
        return c.get(f"{gen.base}/jobs/{job_of_a['id']}", headers=b)

    def redis_stopped(c):
        redis.kill()
        redis.wait(10)
        return c.post(f"{gen_redis.base}/generate", headers=a, files={"image": ("x.png", png(33, 33))}, data=fields)

    dup = [("image", ("x.png", png(32, 32))), ("steps", (None, "2")), ("steps", (None, "3"))]
    attacks: list[tuple[str, str, Api, list[int], Callable]] = [
        ("100000x1 PNG to /score", "memory", score, [400, 413, 422], score_post(png(100_000, 1, "L"))),
        ("20000x1 PNG to /score", "memory", score, [400, 413, 422], score_post(png(20_000, 1, "L"))),
        ("100000x1 PNG to /generate", "memory", gen, [400, 413, 422], gen_post(png(100_000, 1, "L"))),
        ("60000x60000 header (decompression bomb)", "memory", score, [413], score_post(png_with_header(60000, 60000))),
        ("zTXt bomb (200 MB of text)", "memory", gen, [400, 413], gen_post(ztxt_bomb())),
        ("chunked 5 GiB to /score/batch", "body limit", score, [413],
         chunked(score, "/score/batch?basis=per-image", 5 << 30)),
        ("chunked 5 GiB to /generate", "body limit", gen, [413],
         chunked(gen, "/generate", 5 << 30, MULTIPART_FILE_START, MULTIPART)),
        ("Content-Length 10 GiB", "body limit", gen, [413], lambda _: send_declared(gen.port, "/generate", a, 10 << 30)),
        ("10 GiB body without a key", "auth", gen, [401], lambda _: send_declared(gen.port, "/generate", {}, 10 << 30)),
        ("wrong API key", "auth", gen, [401], lambda c: c.get(f"{gen.base}/jobs/x", headers={"X-API-Key": "guess"})),
        ("10-byte IPTC body", "decoder", gen, [400, 415], gen_post(b"\x1c\x02\x00\x00\x02\x00\x02AB\x00")),
        ("truncated PNG", "decoder", score, [400], score_post(png(64, 64)[:70])),
        ("GIF", "decoder", gen, [400, 415], gen_post(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00;")),
        ("empty image", "decoder", gen, [400], gen_post(b"")),
        ("pickle body to /score/batch", "decoder", score, [400], batch(b"\x80\x04\x95" + b"\0" * 64)),
        ("float32 pairs", "parameters", score, [422], batch(pairs_body(1, 32, np.float32))),
        ("noise_level 5000", "parameters", gen, [422], gen_post(png(32, 32), data={**fields, "noise_level": "5000"})),
        ("duplicate form field", "parameters", gen, [422],
         lambda c: c.post(f"{gen.base}/generate", headers=a, files=dup, data={"noise_level": "auto:per-image"})),
        ("path traversal in /views", "traversal", gen, [400, 404],
         lambda c: c.get(f"{gen.base}/views/..%2F..%2Fetc/passwd.png", headers=a)),
        ("tenant B reads tenant A's job", "isolation", gen, [404], tenant_b_reads_a),
        ("tenant B reads tenant A's input", "isolation", gen, [404],
         lambda c: c.get(f"{gen.base}/inputs/{hashlib.sha256(png(40, 40)).hexdigest()}", headers=b)),
        ("adaptive without a basis", "method", gen, [409], gen_post(png(32, 32), data={**fields, "noise_level": "auto"})),
        ("queue full", "backpressure", gen, [429],
         lambda c: [c.post(f"{gen.base}/generate", headers=a, files={"image": ("x.png", png(30 + i, 30))}, data=fields)
                    for i in range(4)][-1]),
        ("Redis stopped", "outage", gen_redis, [503], redis_stopped),
    ]
    return _attack(attacks, score)


def _attack(attacks: list[tuple], score: Api) -> list[Outcome]:
    """Send each attack, then record the answer, the server's memory and whether it is still up."""
    outcomes = []
    with httpx.Client(timeout=120) as client:
        for name, category, api, expected, send in attacks:
            out = Outcome(name, category, "scorer-api" if api is score else "generator-api", expected)
            with peak_rss(api) as rss:
                try:
                    answer = send(client)
                except httpx.HTTPError as exc:
                    answer, out.note = None, f"{type(exc).__name__}"
            if isinstance(answer, tuple):
                out.status, sent = answer
                out.note = f"{sent / 2**20:.1f} MiB sent before the server stopped reading"
            elif answer is not None:
                out.status, out.error, out.json_body = _answer(answer)
            out.base_rss_mb, out.peak_rss_mb = round(rss["base_mb"], 1), round(rss["peak_mb"], 1)
            out.rss_delta_mb = round(rss["peak_mb"] - rss["base_mb"], 1)
            out.up_after = api.up()
            out.ok = out.status in expected and out.up_after and out.rss_delta_mb < RSS_LIMIT_MB
            outcomes.append(out)
    return outcomes


def run(workdir: Path) -> dict:
    """Start the processes, run the catalogue, stop everything; the result document."""
    redis_port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    base = {k: v for k, v in os.environ.items() if not k.startswith("GENVIEW_")}
    env = {**base, "OMP_NUM_THREADS": "1", "GENVIEW_MODEL": "tiny", "GENVIEW_SCORER_MODEL": "tiny",
           "GENVIEW_DEVICE": "cpu", "GENVIEW_STORE_URL": f"file://{workdir}/store",
           "GENVIEW_API_KEYS": ",".join(KEYS.values()), "GENVIEW_MAX_QUEUE_DEPTH": "4",
           "GENVIEW_MAX_SCORE_PAIRS": "8", "GENVIEW_MAX_SCORE_SIDE": "256",
           "GENVIEW_MAX_SCORE_BATCH_BYTES": str(4 << 20)}
    apis = []
    try:
        apis.append(Api("generator-api", env, workdir / "generator.log"))
        apis.append(Api("scorer-api", env, workdir / "scorer.log"))
        apis.append(Api("generator-api", {**env, "GENVIEW_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"},
                        workdir / "generator-redis.log"))
        outcomes = catalogue(*apis, redis)
    finally:
        for api in apis:
            api.stop()
        if redis.poll() is None:
            redis.kill()
            redis.wait(10)
    answered_4xx = sum(1 for o in outcomes if o.status is not None and 400 <= o.status < 500)
    return {"attacks": len(outcomes), "categories": sorted({o.category for o in outcomes}),
            "answered_as_expected": sum(o.ok for o in outcomes), "answered_4xx": answered_4xx,
            "answered_503": sum(o.status == 503 for o in outcomes), "server_errors": sum(
                1 for o in outcomes if o.status is not None and o.status >= 500 and o.status != 503),
            "rss_limit_mb": RSS_LIMIT_MB, "outcomes": [asdict(o) for o in outcomes]}


def markdown(result: dict) -> str:
    rows = ["| attack | category | service | expected | got | error | peak RSS Δ (MB) | up after | ok |",
            "|---|---|---|---|---|---|---|---|---|"]
    for o in result["outcomes"]:
        rows.append(f"| {o['attack']} | {o['category']} | {o['target']} | {'/'.join(map(str, o['expected']))} | "
                    f"{o['status']} | {o['error'] or ''} | {o['rss_delta_mb']} | {o['up_after']} | "
                    f"{'yes' if o['ok'] else '**no**'} |")
    return (f"# Attack catalogue\n\n{result['attacks']} attacks in {len(result['categories'])} categories; "
            f"{result['answered_as_expected']} answered as expected ({result['answered_4xx']} with a 4xx, "
            f"{result['answered_503']} with a 503), {result['server_errors']} server errors. Peak RSS is the API "
            f"process's resident memory above its level before the attack (limit {result['rss_limit_mb']} MB).\n"
            f"Generated by `python -m bench.attacks` (environment in attack_catalogue.json).\n\n"
            + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args()
    from bench.report import emit

    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp))
    emit(result, args.out)
    if args.markdown:
        Path(args.markdown).write_text(markdown(result))


if __name__ == "__main__":
    main()
