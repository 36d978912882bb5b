"""Once-for-all generation of a dataset's views (paper Sect. 3.3): a resumable manifest, official-layout export."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import fsspec
import torch
from tqdm import tqdm

from genview.basis import PER_IMAGE
from genview.client import GeneratorClient
from genview.image_files import read_bytes, relative_to, require_images, source_root
from genview.method.noise import NoisePolicy, adaptive_noise_level
from genview.official import OfficialView
from genview.schemas import BasisFitResult, ManifestRow
from genview.store import sha256_hex


def relative_paths(source: str) -> tuple[list[str], list[str]]:
    """(full paths/URLs, paths relative to the folder) of the images under `source` (NoImagesError if none)."""
    paths, root = require_images(source), source_root(source)
    return paths, [relative_to(root, p) or p for p in paths]


def read_manifest(path: str) -> dict[str, ManifestRow]:
    """Rows of an existing manifest by relative path (empty if there is none)."""
    fs, local = fsspec.core.url_to_fs(path)
    if not fs.exists(local):
        return {}
    with fs.open(local, "rt") as f:
        rows = [ManifestRow.model_validate_json(line) for line in f if line.strip()]
    return {row.path: row for row in rows}


def read_levels(path: str) -> dict[str, tuple[float, int]]:
    """`<path> <fg_ratio>` lines (the official fg_ratios.txt) → {path: (p, adaptive level, Eq. 8)}."""
    out = {}
    with fsspec.open(path, "rt") as f:
        for line in f:
            if line.strip():
                name, ratio = line.rsplit(maxsplit=1)
                p = float(ratio)
                out[name] = (p, int(adaptive_noise_level(torch.tensor([p]))[0]))
    return out


def ensure_basis(client: GeneratorClient, source: str, num: int, seed: int = 0) -> BasisFitResult | None:
    """Have the generator fit its PCA basis on a sample of `source` when it has none, and wait until it serves it.

    No model is loaded here: the sample is uploaded (`POST /inputs`, so API keys and tenants hold) and a generator
    worker fits on those inputs (`POST /basis/fit`). None when a basis is already there.
    """
    paths = require_images(source)  # a missing or empty folder is refused before any request
    if client.basis().basis_id != PER_IMAGE:
        return None
    return client.fit_basis_on(paths, num, seed)


def generate_dataset(source: str, client: GeneratorClient, manifest: str, *, noise_policy: NoisePolicy = NoisePolicy("adaptive"),
                     num_views: int = 1, seed: int = 0, steps: int = 20, size: int = 512, concurrency: int = 8,
                     levels_from: str | None = None, progress: bool = True) -> dict:
    """Request the views of every image not yet in the manifest; append one row per finished image."""
    paths, rels = relative_paths(source)
    done = read_manifest(manifest)
    levels = read_levels(levels_from) if levels_from else {}
    todo = [(p, r) for p, r in zip(paths, rels) if r not in done]
    lock = threading.Lock()

    def one(path: str, rel: str) -> ManifestRow:
        data = read_bytes(path)
        policy = NoisePolicy("constant", levels[rel][1]) if rel in levels else noise_policy
        result = client.generate(data, noise_policy=policy.spec, num_views=num_views, seed=seed, steps=steps,
                                 size=size).result
        return ManifestRow(path=rel, sha256=sha256_hex(data), fg_ratio=levels[rel][0] if rel in levels else result.fg_ratio,
                           noise_level=result.noise_level, views=[v.key for v in result.views], fg_map=result.fg_map,
                           seed=seed, fg_basis=result.fg_basis)

    start = time.perf_counter()
    with fsspec.open(manifest, "at") as out, ThreadPoolExecutor(concurrency) as pool:
        bar = tqdm(total=len(paths), initial=len(paths) - len(todo), unit="img", desc="generate", disable=not progress)
        for future in as_completed([pool.submit(one, p, r) for p, r in todo]):
            row = future.result()
            with lock:
                out.write(row.model_dump_json(exclude_none=True) + "\n")
                out.flush()
            bar.update()
        bar.close()
    return {"images": len(paths), "submitted": len(todo), "seconds": time.perf_counter() - start}


def manifest_views(manifest: str, client: GeneratorClient) -> list[OfficialView]:
    """The manifest's images for `export_official`, their first views read from the generator."""
    return [OfficialView(row.path, row.fg_ratio, lambda row=row: client.view(row.views[0]))
            for row in read_manifest(manifest).values()]
