"""What the HTTP + Redis queue + store path adds per request, where it goes, and cache-hit throughput (CPU, tiny).

Baseline, measured in the same run and interleaved with the service: the worker's own work on one request
called directly in this process — decode, `ViewGenerator.generate` (fitted basis, adaptive policy), view and
foreground-map encoding. Service: `genview generator-api` and one `genview generator-worker` process at the
default settings (batch wait included), a private redis-server and a file:// store; one client, `wait=true`.

`added_median_of_pairs_ms` is the median of (service − direct) over the interleaved pairs: the load drift that
moves the two p50s apart on a shared VM cancels within a pair. The breakdown splits each service request at the
job's own timestamps (submission, completion): the API before the queue, queue + worker (less the direct model
work), and the way back (completion notice and response); the store's durable commit and the input write are
also timed alone on the same store. Cache hits — by content (`GET /views/lookup`, no upload) and by upload
(`POST /generate`) — against `/healthz`, in alternating rounds. The client prepares each request once (its URL, its
multipart body), as it does `/healthz`'s, so that its own work — on the same two cores — differs between the kinds
only by the answer it reads; the CPU per request of the client and of the API process are reported beside the rates.

    python -m bench.generator_overhead --out bench/results/generator_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch

from bench.report import emit
from genview.basis import DEFAULT_OWNER, BasisStore
from genview.generation import ViewGenerator, ViewRequest
from genview.images import load_rgb
from genview.method.pca import fit_pca_basis
from genview.models.presets import ensure_random_unclip
from genview.models.unclip import UnclipGenerator
from genview.schemas import GenerationJobDocument, GenerationParams
from genview.settings import Settings
from genview.store import ObjectStore, fg_map_key, input_key, sha256_hex, view_key, view_meta_key
from genview.view_encoding import ViewEncoding, encode_fg_map
from harness.images import png_bytes
from harness.ports import free_port, wait_for_port
from harness.processes import service_env, start_api, start_worker

CHUNK = 40  # requests of one kind before the next kind's turn


def percentiles(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * float(np.percentile(samples, 50)), "p99_ms": 1000 * float(np.percentile(samples, 99))}


def direct(views: ViewGenerator, data: bytes, params: GenerationParams, basis, encoding: ViewEncoding) -> float:
    """Latency of the worker's model work on one request, called directly."""
    start = time.perf_counter()
    request = ViewRequest(load_rgb(data, 10**8), sha256_hex(data), params, basis)
    for generated in views.generate([request]):
        [encoding.encode(v) for v in generated.views]
        encode_fg_map(generated.fg_map)
    return time.perf_counter() - start


def through_service(client: httpx.Client, base: str, data: bytes, steps: int, size: int) -> tuple[float, dict]:
    """Latency of one fresh request through the service, and its split at the job's timestamps (seconds)."""
    sent, start = time.time(), time.perf_counter()
    r = client.post(f"{base}/generate", params={"wait": "true", "timeout": "120"},
                    files={"image": ("x.png", data, "image/png")}, data={"steps": steps, "size": size})
    took, received = time.perf_counter() - start, time.time()
    doc = GenerationJobDocument.model_validate_json(r.content)
    assert r.status_code == 200 and doc.cached is False, r.text
    return took, {"api_before_queue": doc.created - sent, "queue_and_worker": doc.updated - doc.created,
                  "completion_to_client": received - doc.updated}


def store_parts(store: ObjectStore, data: bytes, i: int) -> dict[str, float]:
    """The store's share alone: the input write (no fsync) and the views + document commit, on fresh keys."""
    sha, phash = sha256_hex(data + str(i).encode()), "f" * 32
    start = time.perf_counter()
    store.put(input_key(sha), data, durable=False)
    mid = time.perf_counter()
    meta = view_meta_key(sha, phash)
    store.put_many({view_key(sha, phash, 0, "webp"): data, fg_map_key(sha, phash): data[:2000],
                    meta: b"{}" * 200}, last=meta)
    return {"input_write": mid - start, "views_and_document_commit": time.perf_counter() - mid}


def throughput(fn, total: int, concurrency: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(fn, range(total)))
    return total / (time.perf_counter() - start)


@contextmanager
def service(work: Path, cache: str, store_url: str):
    """A private redis-server, a generator API and one worker at the default settings; yields the base URL and
    the API process."""
    port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--save", "", "--appendonly",
                                   "no"], stdout=subprocess.DEVNULL)
    procs = []
    try:
        wait_for_port(port)
        env = service_env(model="tiny", device="cpu", model_cache=cache, redis_url=f"redis://127.0.0.1:{port}/0",
                          store_url=store_url)  # every other setting at its default (batch wait included)
        api, base = start_api("generator-api", env, work)
        procs += [api, start_worker("generator-worker", env, work)]
        yield base, psutil.Process(api.popen.pid)
    finally:
        for p in procs:
            p.stop()
        redis_proc.terminate()
        redis_proc.wait()


def cpu_s(process: psutil.Process) -> float:
    """CPU seconds (user + system) `process` has used so far."""
    times = process.cpu_times()
    return times.user + times.system


def prepared_upload(url: str, data: bytes, form: dict) -> tuple[str, bytes, dict[str, str]]:
    """A `POST /generate` of `data` encoded once: (url, multipart body, headers)."""
    request = httpx.Request("POST", url, files={"image": ("x.png", data, "image/png")}, data=form)
    return url, request.read(), {"content-type": request.headers["content-type"]}


def hit_rates(client: httpx.Client, base: str, api: psutil.Process, cached: list[bytes], args) -> dict[str, list[float]]:
    """Per round: requests/s of `/healthz`, lookups by content and uploads of cached images, alternating, and the
    CPU milliseconds per request of this client and of the API process."""
    form = {"steps": args.steps, "size": args.size}
    lookups = [str(httpx.URL(f"{base}/views/lookup", params={"sha256": sha256_hex(d), **form})) for d in cached]
    uploads = [prepared_upload(f"{base}/generate", d, form) for d in cached]

    def lookup(i: int) -> None:
        r = client.get(lookups[i % len(lookups)])
        assert r.status_code == 200, r.text

    def upload(i: int) -> None:
        url, body, headers = uploads[i % len(uploads)]
        r = client.post(url, content=body, headers=headers)
        assert r.status_code == 200 and r.json()["cached"] is True

    def healthz(_: int) -> None:
        client.get(f"{base}/healthz")

    me, kinds = psutil.Process(), (("healthz", healthz), ("lookup_hit", lookup), ("multipart_hit", upload))
    runs: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # each round: the three kinds alternate in chunks (the shared VM's load varies fast)
        for clients in (1, args.concurrency):
            spent = {name: np.zeros(3) for name, _ in kinds}  # wall, client CPU, API CPU (seconds)
            for _ in range(args.hits // CHUNK):
                for name, fn in kinds:
                    before = np.array([0.0, cpu_s(me), cpu_s(api)])
                    wall = CHUNK / throughput(fn, CHUNK, clients)
                    spent[name] += np.array([wall, cpu_s(me), cpu_s(api)]) - before
            n = CHUNK * (args.hits // CHUNK)
            for name, (wall, client_cpu, api_cpu) in spent.items():
                for measure, value in (("requests_per_s", n / wall), ("client_cpu_ms", 1000 * client_cpu / n),
                                       ("api_cpu_ms", 1000 * api_cpu / n)):
                    runs.setdefault(f"{name}_{measure}_{clients}_clients", []).append(value)
    return runs


def medians_ms(rows: list[dict[str, float]]) -> dict[str, float]:
    return {f"{name}_ms": 1000 * float(np.median([r[name] for r in rows])) for name in rows[0]}


def measure(args, work: Path, cache: str, store_url: str) -> dict:
    inputs = [png_bytes(160, 120, seed=i) for i in range(2 * args.requests + 2)]
    generator = UnclipGenerator.load("tiny", "cpu", cache)
    basis = fit_pca_basis(generator.encode([load_rgb(d, 10**8) for d in inputs[:16]]).tokens, generator.grid)
    store = ObjectStore(store_url)
    BasisStore(store, generator.encoder_id).save(basis, DEFAULT_OWNER)
    views = ViewGenerator(generator, (defaults := Settings()).fg_fraction, defaults.max_batch_size)
    params = GenerationParams(model="tiny", noise_policy="auto", basis=basis.fingerprint,
                              steps=args.steps, size=args.size)
    encoding = ViewEncoding(defaults.view_format, defaults.view_quality)
    load_before = os.getloadavg()
    with service(work, cache, store_url) as (base, api), httpx.Client(timeout=150) as client:
        direct(views, inputs[-1], params, basis, encoding)  # warm-up
        through_service(client, base, inputs[-2], args.steps, args.size)  # warm-up (worker start)
        d, s, split, parts = [], [], [], []
        for i in range(args.requests):  # interleaved, each on a fresh image (no cache hits)
            d.append(direct(views, inputs[2 * i], params, basis, encoding))
            took, where = through_service(client, base, inputs[2 * i + 1], args.steps, args.size)
            s.append(took)
            split.append({**where, "queue_and_worker_less_model": where["queue_and_worker"] - d[-1]})
            parts.append(store_parts(store, inputs[2 * i], i))
        runs = hit_rates(client, base, api, inputs[1:2 * args.requests:2], args)
    rates = {name: float(np.median(values)) for name, values in runs.items()}
    result = {
        "shape": "generator-api + generator-worker processes (default settings: "
                 f"batch wait {defaults.max_batch_wait_ms} ms, batch {defaults.max_batch_size}), private Redis, "
                 "file:// store, fitted basis, adaptive policy; 1 client, wait=true; direct: the same "
                 "decode + ViewGenerator + encode in this process, interleaved",
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "store": store_url, "torch_threads": torch.get_num_threads(), "requests": args.requests, "steps": args.steps,
        "size": args.size, "direct": percentiles(d), "service": percentiles(s),
        "added_p50_ms": 1000 * (float(np.percentile(s, 50)) - float(np.percentile(d, 50))),
        "added_p99_ms": 1000 * (float(np.percentile(s, 99)) - float(np.percentile(d, 99))),
        "added_median_of_pairs_ms": 1000 * float(np.median(np.subtract(s, d))),  # each request less its direct twin
        "service_over_direct_p50": float(np.percentile(s, 50) / np.percentile(d, 50)),
        "breakdown_median": {**medians_ms(split), **medians_ms(parts)},
        "median_of_rounds": rates, "rounds": runs,
    }
    for clients in (1, args.concurrency):
        for name in ("lookup_hit", "multipart_hit"):
            result[f"{name}_over_healthz_{clients}_clients"] = (
                rates[f"{name}_requests_per_s_{clients}_clients"] / rates[f"healthz_requests_per_s_{clients}_clients"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--hits", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="alternating /healthz and cache-hit runs")
    ap.add_argument("--store-dir", help="folder of the file:// store (default: a temporary folder on disk; "
                                         "/dev/shm shows the cost without fsync)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the worker process runs with one thread too
    work = Path(tempfile.mkdtemp(prefix="genview-bench-"))
    cache = str(work / "cache")
    store_url = f"file://{Path(tempfile.mkdtemp(dir=args.store_dir)) if args.store_dir else work / 'store'}"
    ensure_random_unclip("tiny", cache)
    emit(measure(args, work, cache, store_url), args.out)


if __name__ == "__main__":
    main()
