"""Fitting (or importing) an encoder's PCA foreground basis on a sample of the user's images."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import fsspec
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from genview.basis import BasisStore
from genview.image_files import read_bytes
from genview.images import MAX_PIXELS, load_rgb
from genview.method.defaults import FG_FRACTION
from genview.method.pca import PCABasis, PCAFitter, basis_from_official
from genview.schemas import BasisFitResult, FitBasisJob
from genview.store import ObjectStore, basis_key, input_key, owned_inputs_prefix

log = logging.getLogger(__name__)


class TokenEncoder(Protocol):
    """What a basis is fitted for: the generator's image encoder or the scorer's encoder."""

    encoder_id: str
    dim: int
    grid: int

    def tokens(self, images: list) -> torch.Tensor: ...


def sample_paths(paths: Sequence[str], num: int, seed: int = 0) -> list[str]:
    """A seeded random sample of `num` paths (all of them if there are fewer)."""
    paths = list(paths)
    return paths if len(paths) <= num else random.Random(seed).sample(paths, num)


class TooFewImages(ValueError):
    """A fit would use fewer usable images than the configured minimum (`GENVIEW_MIN_FIT_IMAGES`)."""


def too_few_images(count: int, min_images: int) -> TooFewImages:
    return TooFewImages(f"too_few_images: a basis fit needs at least {min_images} usable images "
                        f"(GENVIEW_MIN_FIT_IMAGES), {count} available")


def fit_on_batches(batches: Iterable[list], encode_tokens: Callable[[list], torch.Tensor], dim: int, grid: int,
                   fg_fraction: float = FG_FRACTION, min_images: int = 1) -> tuple[PCABasis, int]:
    """Stream image batches through `encode_tokens` (→ [B, grid², dim]) into one PCA fit; (basis, images).
    TooFewImages when fewer than `min_images` images came through."""
    fitter = PCAFitter(dim, grid)
    for images in batches:
        if images:
            fitter.update(encode_tokens(images))
    if fitter.num_images < min_images:
        raise too_few_images(fitter.num_images, min_images)
    return fitter.fit(fg_fraction), fitter.num_images


def fit_basis(paths: Sequence[str], encode_tokens: Callable[[list[Image.Image]], torch.Tensor], dim: int,
              grid: int, fg_fraction: float = FG_FRACTION, batch_size: int = 16, max_pixels: int = MAX_PIXELS,
              progress: bool = True) -> PCABasis:
    """Fit on image files or URLs, `batch_size` at a time, with a progress bar."""
    bar = tqdm(total=len(paths), unit="img", desc="fit-pca", disable=not progress)

    def batches():
        for i in range(0, len(paths), batch_size):
            images = [load_rgb(read_bytes(p), max_pixels) for p in paths[i:i + batch_size]]
            yield images
            bar.update(len(images))

    basis, _ = fit_on_batches(batches(), encode_tokens, dim, grid, fg_fraction)
    bar.close()
    return basis


def decode_image(data: bytes, max_pixels: int) -> list:
    """A stored input as a list of images to fit on (one image)."""
    return [load_rgb(data, max_pixels)]


def candidate_inputs(store: ObjectStore, tenant: str | None) -> list[str]:
    """The input keys a fit of `tenant` may sample: its own uploads (None: every input, an open service)."""
    if tenant is None:
        return store.list("inputs")
    return [input_key(key.rsplit("/", 1)[1]) for key in store.list(owned_inputs_prefix(tenant))]


def fit_inputs(job: FitBasisJob, store: ObjectStore) -> list[str]:
    """The input keys a fit job uses: its keys, or a seeded sample of `num` of its tenant's inputs."""
    return job.keys if job.keys is not None else sample_paths(candidate_inputs(store, job.tenant), job.num)


def run_fit_job(job: FitBasisJob, store: ObjectStore, encoder: TokenEncoder, fg_fraction: float = FG_FRACTION,
                max_pixels: int = MAX_PIXELS, batch_size: int = 16,
                decode: Callable[[bytes, int], list] = decode_image) -> BasisFitResult:
    """A `fit-basis` queue job: fit on its inputs (`fit_inputs`), save the basis as a new version of its owner.

    Inputs that `decode` cannot read are skipped (the store's `inputs/` may hold other kinds of bodies);
    TooFewImages when fewer than `job.min_images` are readable.
    """
    keys = fit_inputs(job, store)

    def batches():
        images: list = []
        for key in keys:
            try:
                images.extend(decode(store.get(key), max_pixels))
            except Exception as exc:  # unreadable or not an image: skip it, say so
                log.info("basis fit skips %s: %s: %s", key, type(exc).__name__, exc)
            if len(images) >= batch_size:
                yield images
                images = []
        yield images

    basis, count = fit_on_batches(batches(), encoder.tokens, encoder.dim, encoder.grid, fg_fraction, job.min_images)
    basis_id = BasisStore(store, encoder.encoder_id).save(basis, job.owner, images=count)
    return BasisFitResult(encoder_id=encoder.encoder_id, basis_id=basis_id, key=basis_key(encoder.encoder_id, basis_id),
                          images=count, threshold=basis.threshold)


def import_official(vectors: str, mean: str, threshold: float) -> PCABasis:
    """A basis from the official repository's `pca_vectors.npy` and `mean_vectors.npy` (local paths or URLs)."""
    arrays = []
    for path in (vectors, mean):
        with fsspec.open(path, "rb") as f:
            arrays.append(np.load(f, allow_pickle=False))
    return basis_from_official(arrays[0], arrays[1], threshold)


def threshold_on_images(basis: PCABasis, paths: Sequence[str], encoder: TokenEncoder, fg_fraction: float = FG_FRACTION,
                        batch_size: int = 16, max_pixels: int = MAX_PIXELS) -> PCABasis:
    """The basis with threshold a at the (1 − fg_fraction) quantile of its projections over the images' tokens."""
    projections = []
    for i in range(0, len(paths), batch_size):
        images = [load_rgb(read_bytes(p), max_pixels) for p in paths[i:i + batch_size]]
        projections.append(basis.project(encoder.tokens(images)).flatten().cpu())
    threshold = torch.quantile(torch.cat(projections), 1.0 - fg_fraction)
    return dataclasses.replace(basis, threshold=float(threshold))
