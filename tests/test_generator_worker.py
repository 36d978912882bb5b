"""The generator worker in one process (memory queue, file store): pipelined = serial bytes, failures, basis fits."""

from __future__ import annotations

import pytest
from PIL import Image
from prometheus_client import generate_latest

from genview.basis import DEFAULT_OWNER, BasisStore
from genview.models.unclip import UnclipGenerator
from genview.queue import MemoryJobQueue
from genview.schemas import BasisFitResult, FitBasisJob, GenerateJob, GenerationParams, GenerationResult, to_queue
from genview.settings import Settings
from genview.store import ObjectStore, input_key, sha256_hex
from genview.view_encoding import ViewEncoding
from services.generator.worker import GeneratorWorker
from harness.images import png_bytes


@pytest.fixture(scope="module")
def generator(model_cache):
    return UnclipGenerator.load("tiny", "cpu", model_cache)


def _worker(generator, tmp_path, name: str, encoding: ViewEncoding | None = None, **settings) -> GeneratorWorker:
    config = Settings(model="tiny", device="cpu", store_url=f"file://{tmp_path / name}", max_batch_size=2,
                      **settings)
    queue = MemoryJobQueue("generate", max_deliveries=config.max_deliveries)
    return GeneratorWorker(config, generator, queue, ObjectStore(config.store_url), encoding)


def _submit(worker: GeneratorWorker, seeds: range, noise: str = "auto:per-image", basis: str | None = None) -> list:
    ids = []
    for seed in seeds:
        data = png_bytes(48, 40, seed=seed)
        sha = sha256_hex(data)
        worker.store.put(input_key(sha), data)
        params = GenerationParams(model="tiny", noise_policy=noise, basis=basis, steps=2, size=32, num_views=2, seed=0)
        ids.append(worker.queue.submit(to_queue(GenerateJob(sha=sha, params=params)))[0])
    return ids


def _drain(worker: GeneratorWorker) -> None:
    """The run loop's way: `submit` each batch (stores overlap the next batch), then wait for the last stores."""
    while batch := worker.queue.claim("test", 4, 0):
        worker.submit(batch)
    worker.wait_stored()


def _view_bytes(worker: GeneratorWorker, job_ids: list[str]) -> list[bytes]:
    out = []
    for job_id in job_ids:
        job = worker.queue.get(job_id)
        assert job.status == "done", job.error
        result = GenerationResult.model_validate(job.result)
        out += [worker.store.get(v.key) for v in result.views] + [worker.store.get(result.fg_map)]
    return out


def test_pipelined_worker_writes_the_same_bytes_as_the_serial_path(generator, tmp_path):
    serial = _worker(generator, tmp_path, "serial", encode_threads=0)
    piped = _worker(generator, tmp_path, "piped", encode_threads=3)
    a, b = _submit(serial, range(3)), _submit(piped, range(3))
    _drain(serial)
    _drain(piped)
    assert _view_bytes(serial, a) == _view_bytes(piped, b)
    assert 0.0 <= piped.idle.ratio() < 1.0 and serial.idle.ratio() > 0.0
    exported = generate_latest(piped.registry).decode()
    assert f"genview_worker_gpu_idle_ratio {piped.idle.ratio()}" in exported
    piped.close()


class BrokenEncoding(ViewEncoding):
    def encode(self, img: Image.Image) -> bytes:
        raise OSError("disk full")


def test_every_delivery_is_failed_when_encoding_raises_in_the_pool(generator, tmp_path):
    worker = _worker(generator, tmp_path, "broken", BrokenEncoding(), encode_threads=2, max_deliveries=1)
    ids = _submit(worker, range(3))
    _drain(worker)
    jobs = [worker.queue.get(i) for i in ids]
    assert [j.status for j in jobs] == ["failed"] * 3 and all("disk full" in j.error for j in jobs)
    worker.close()


def test_a_shut_down_pool_still_completes_every_delivery(generator, tmp_path):
    worker = _worker(generator, tmp_path, "closed", encode_threads=2)
    worker.pool.shutdown()
    ids = _submit(worker, range(3))
    _drain(worker)
    assert all(worker.queue.get(i).status == "done" for i in ids)


def test_adaptive_job_without_basis_fails_and_a_fit_job_makes_it_work(generator, tmp_path):
    worker = _worker(generator, tmp_path, "fit", encode_threads=0, max_deliveries=1)
    [refused] = _submit(worker, range(1), noise="adaptive", basis=None)
    _drain(worker)
    assert worker.queue.get(refused).status == "failed" and "fit-pca" in worker.queue.get(refused).error
    _submit(worker, range(1, 4))  # more stored inputs to fit on
    fit_id, _ = worker.queue.submit(to_queue(FitBasisJob(num=10)))
    _drain(worker)
    fit = worker.queue.get(fit_id)
    assert fit.status == "done", fit.error
    result = BasisFitResult.model_validate(fit.result)
    basis = BasisStore(worker.store, generator.encoder_id).current(DEFAULT_OWNER)
    assert result.images == 4 and result.basis_id == basis.fingerprint
    assert result.key == f"bases/generator-tiny/{basis.fingerprint}.safetensors"
    [ok] = _submit(worker, range(9, 10), noise="adaptive", basis=basis.fingerprint)
    _drain(worker)
    done = GenerationResult.model_validate(worker.queue.get(ok).result)
    assert done.fg_basis == "fitted" and done.basis_id == basis.fingerprint


def test_a_job_keyed_on_a_basis_that_is_not_stored_fails_for_good_at_once(generator, tmp_path):
    worker = _worker(generator, tmp_path, "unknown", encode_threads=0, max_deliveries=3)
    [lost] = _submit(worker, range(1), noise="adaptive", basis="0" * 16)  # no such version was ever saved
    _drain(worker)
    job = worker.queue.get(lost)
    assert (job.status, job.deliveries) == ("failed", 1) and "UnknownBasis" in job.error, job.error


def test_a_refit_or_pin_never_changes_a_job_accepted_on_an_older_version(generator, tmp_path):
    """Jobs carry the basis id they were accepted with; the worker loads that version, whatever is current."""
    worker = _worker(generator, tmp_path, "versions", encode_threads=0, max_deliveries=1)
    _submit(worker, range(4))
    bases = BasisStore(worker.store, generator.encoder_id)
    fitted = []
    for num in (2, 4):  # two versions; the second becomes current
        fit_id, _ = worker.queue.submit(to_queue(FitBasisJob(num=num)))
        _drain(worker)
        fitted.append(BasisFitResult.model_validate(worker.queue.get(fit_id).result).basis_id)
    assert fitted[0] != fitted[1] and bases.current_id(DEFAULT_OWNER) == fitted[1]
    [old] = _submit(worker, range(7, 8), noise="adaptive", basis=fitted[0])
    [constant] = _submit(worker, range(7, 8), noise="constant:100")
    [per_image] = _submit(worker, range(8, 9))
    _drain(worker)
    assert GenerationResult.model_validate(worker.queue.get(old).result).basis_id == fitted[0]
    for job in (constant, per_image):  # no basis looked at, none reported
        done = GenerationResult.model_validate(worker.queue.get(job).result)
        assert (done.basis_id, done.fg_basis) == (None, "per-image")


def test_view_format_webp(generator, tmp_path):
    worker = _worker(generator, tmp_path, "webp", encode_threads=0, view_format="webp", view_quality=80)
    [job] = _submit(worker, range(1))
    _drain(worker)
    result = GenerationResult.model_validate(worker.queue.get(job).result)
    assert all(v.key.endswith(".webp") for v in result.views)
    assert worker.store.get(result.views[0].key)[8:12] == b"WEBP"


def test_handle_finishes_every_delivery_before_it_returns(generator, tmp_path):
    worker = _worker(generator, tmp_path, "sync", encode_threads=2)
    ids = _submit(worker, range(2))
    worker.handle(worker.queue.claim("test", 4, 0))
    assert [worker.queue.get(i).status for i in ids] == ["done", "done"]
    worker.close()


def test_an_input_cut_short_by_a_crash_is_removed_and_its_job_fails(generator, tmp_path):
    worker = _worker(generator, tmp_path, "torn", max_deliveries=1)
    [job_id] = _submit(worker, range(1))
    sha = worker.queue.get(job_id).payload["sha"]
    worker.store.put(input_key(sha), b"\x89PNG", overwrite=True)  # what an un-fsynced write may leave
    _drain(worker)
    job = worker.queue.get(job_id)
    assert job.status == "failed" and "send the image again" in job.error
    assert not worker.store.exists(input_key(sha))  # the next upload of these bytes stores them afresh


def test_a_result_whose_views_are_gone_is_regenerated_not_served(generator, tmp_path):
    worker = _worker(generator, tmp_path, "gone")
    [first] = _submit(worker, range(1))
    _drain(worker)
    result = GenerationResult.model_validate(worker.queue.get(first).result)
    worker.store.delete(result.views[0].key)
    again = worker.queue.submit(worker.queue.get(first).payload, "redo")[0]
    _drain(worker)
    assert worker.queue.get(again).status == "done"
    assert worker.store.exists(result.views[0].key)
