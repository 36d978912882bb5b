"""`genview generate-dataset --engine ray`: a whole dataset's views on Ray Data, into WebDataset shards.

The driver only lists the images and plans the shards (a seeded shuffle of the sorted list, cut into shards of
`images_per_shard`). The PCA basis is the operator's default version in the object store (the one the generator
service's tenants without their own use) or fitted on a Ray actor and published there. Ray Data then maps the
shards still missing over a pool of actors that each hold one `ViewGenerator` (`num_gpus` per actor): an actor reads its shard's
images, generates their views with exactly the service's parameters, seeds and encoding, and writes the shard
and its index part. Completed shards are skipped on a rerun; the parquet index is merged at the end.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import ray
from pydantic import BaseModel, ConfigDict

from genview.basis import DEFAULT_OWNER, BasisStore
from genview.batch.shards import ShardOutput, ShardRecord, ShardSample, view_field
from genview.dataset_gen import relative_paths
from genview.basis import uses_fitted_basis
from genview.generation import ViewGenerator, ViewRequest
from genview.image_files import read_bytes
from genview.images import load_rgb
from genview.method.noise import NoisePolicy
from genview.method.pca import PCABasis
from genview.models.presets import encoder_id
from genview.pca_fit import fit_basis, sample_paths
from genview.schemas import GenerationParams, NoisePolicyField
from genview.settings import Settings
from genview.store import ObjectStore, sha256_hex
from genview.view_encoding import ViewEncoding, encode_fg_map


_GEN = GenerationParams.model_fields


class RayGenerationConfig(BaseModel):
    """What to generate, where to write it, and how to spread it over Ray."""

    model_config = ConfigDict(frozen=True)

    images: str  # folder, .txt list or fsspec URL
    shards: str  # output folder or fsspec URL
    settings: Settings  # model, device, store (basis), view encoding, fg fraction
    noise_policy: NoisePolicyField = NoisePolicy("adaptive")
    num_views: int = _GEN["num_views"].default  # the generation defaults are GenerationParams'
    seed: int = _GEN["seed"].default
    steps: int = _GEN["steps"].default
    guidance_scale: float = _GEN["guidance_scale"].default
    prompt: str = _GEN["prompt"].default
    size: int = _GEN["size"].default
    images_per_shard: int = 1000
    batch_size: int = 8  # images per model call on one actor
    concurrency: int = 1  # actors
    gpus_per_actor: float = 1.0
    fit_num: int = 10_000
    with_originals: bool = True  # the shards carry the input bytes (trainers need no other copy)


@dataclass
class ShardTask:
    """One shard to write: its number and its images (positions in the shuffled order, paths, keys)."""

    shard: int
    positions: list[int]
    paths: list[str]
    keys: list[str]


@dataclass
class GenerationStats:
    images: int
    shards: int
    shards_written: list[int]
    seconds: float


def plan_shards(images: str, images_per_shard: int, seed: int) -> list[ShardTask]:
    """The dataset's images in a seeded shuffled order, cut into shards (the same inputs give the same plan)."""
    paths, keys = relative_paths(images)
    order = list(range(len(paths)))
    random.Random(seed).shuffle(order)
    return [ShardTask(s, list(range(start, start + len(chunk))), [paths[i] for i in chunk], [keys[i] for i in chunk])
            for s, start in enumerate(range(0, len(order), images_per_shard))
            for chunk in [order[start:start + images_per_shard]]]


def load_generator(settings: Settings):
    """The unCLIP generator of `settings` (imported here: the driver never loads a model)."""
    from genview.models.acceleration import Acceleration
    from genview.models.unclip import UnclipGenerator

    return UnclipGenerator.load(settings.model, settings.device, settings.model_cache,
                                Acceleration.from_settings(settings))


class BasisFitter:
    """A Ray actor that fits the generator encoder's PCA basis on a sample and saves it to the store."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.unclip = load_generator(settings)

    def fit(self, paths: list[str]) -> bytes:
        s, unclip = self.settings, self.unclip
        basis = fit_basis(paths, lambda images: unclip.encode(images).tokens,
                          unclip.pipe.image_encoder.config.hidden_size, unclip.grid, s.fg_fraction,
                          max_pixels=s.max_pixels, progress=False)
        BasisStore(ObjectStore.from_settings(s), unclip.encoder_id).save(basis, DEFAULT_OWNER, images=len(paths))
        return basis.to_bytes()


def resolve_basis(config: RayGenerationConfig, paths: list[str]) -> PCABasis | None:
    """The store's basis; else, when the policy needs one, a basis fitted on a Ray actor (saved to the store)."""
    s = config.settings
    current = BasisStore(ObjectStore.from_settings(s), encoder_id("generator", s.model)).current(DEFAULT_OWNER)
    if current is not None or not uses_fitted_basis(config.noise_policy):
        return current
    actor = ray.remote(num_gpus=config.gpus_per_actor)(BasisFitter).remote(s)
    try:
        sample = sample_paths(paths, config.fit_num, config.seed)
        return PCABasis.from_bytes(ray.get(actor.fit.remote(sample)))
    finally:
        ray.kill(actor)


def generation_params(config: RayGenerationConfig, basis: PCABasis | None) -> GenerationParams:
    """The parameters the generator API would key the same request on (so both paths give the same views)."""
    return GenerationParams(model=config.settings.model, noise_policy=config.noise_policy,
                            basis=basis.fingerprint if basis and uses_fitted_basis(config.noise_policy) else None,
                            num_views=config.num_views,
                            seed=config.seed, steps=config.steps, guidance_scale=config.guidance_scale,
                            prompt=config.prompt, size=config.size)


class ShardGenerator:
    """Ray Data actor: holds one ViewGenerator, turns each shard task of a batch into a written shard."""

    def __init__(self, config: RayGenerationConfig, basis: bytes | None):
        s = config.settings
        self.config = config
        self.views = ViewGenerator(load_generator(s), s.fg_fraction, config.batch_size)
        self.encoding = ViewEncoding(s.view_format, s.view_quality)
        self.basis = PCABasis.from_bytes(basis) if basis else None
        self.params = generation_params(config, self.basis)
        self.out = ShardOutput(config.shards)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = []
        for shard, positions, paths, keys in zip(batch["shard"], batch["positions"], batch["paths"], batch["keys"]):
            samples = []
            for i in range(0, len(paths), self.config.batch_size):
                part = slice(i, i + self.config.batch_size)
                samples += self.generate(list(positions[part]), list(paths[part]), list(keys[part]))
            self.out.write_shard(int(shard), samples)
            images.append(len(samples))
        return {"shard": batch["shard"], "images": np.array(images)}

    def generate(self, positions: list[int], paths: list[str], keys: list[str]) -> list[ShardSample]:
        """One model call's worth of images → their shard samples."""
        data = [read_bytes(p) for p in paths]
        shas = [sha256_hex(d) for d in data]
        requests = [ViewRequest(load_rgb(d, self.config.settings.max_pixels), sha, self.params,
                                None if self.params.basis is None else self.basis) for d, sha in zip(data, shas)]
        out = []
        for position, key, raw, sha, g in zip(positions, keys, data, shas, self.views.generate(requests)):
            names = [view_field(v, self.encoding.ext) for v in range(len(g.views))]
            record = ShardRecord(key=key, sha256=sha, fg_ratio=g.fg_ratio, fg_basis=g.fg_basis, noise_level=g.noise_level,
                                 seeds=g.seeds, basis_id=self.params.basis, params=self.params,
                                 params_hash=self.params.hash, views=names)
            out.append(ShardSample(int(position), record, raw if self.config.with_originals else None,
                                   [self.encoding.encode(v) for v in g.views], encode_fg_map(g.fg_map)))
        return out


def start_ray(address: str | None, num_cpus: int | None = None, object_store_mb: int | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray with bounded CPUs and object-store memory."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False,
                 object_store_memory=object_store_mb * 2**20 if object_store_mb else None)


def generate_shards(config: RayGenerationConfig) -> GenerationStats:
    """Write every missing shard with a pool of `concurrency` actors, then merge the index (Ray must be started)."""
    start = time.perf_counter()
    tasks = plan_shards(config.images, config.images_per_shard, config.seed)
    if not tasks:
        raise FileNotFoundError(f"no images (.png/.jpg/.jpeg/.webp) found in {config.images}")
    out = ShardOutput(config.shards)
    todo = [t for t in tasks if not out.done(t.shard)]
    written: list[int] = []
    if todo:
        basis = resolve_basis(config, [p for t in tasks for p in t.paths])
        ds = ray.data.from_items([asdict(t) for t in todo], override_num_blocks=len(todo))
        ds = ds.map_batches(ShardGenerator, batch_size=1, compute=ray.data.ActorPoolStrategy(size=config.concurrency),
                            num_gpus=config.gpus_per_actor, num_cpus=1,
                            fn_constructor_kwargs={"config": config, "basis": basis.to_bytes() if basis else None})
        written = sorted(int(row["shard"]) for row in ds.take_all())
    out.merge_index()
    return GenerationStats(images=sum(len(t.paths) for t in tasks), shards=len(tasks), shards_written=written,
                           seconds=time.perf_counter() - start)
