"""The GPU suite's scorer part: PairScorer in-process against `/score/batch` through `genview serve` (API and
scorer worker in one child process, in-memory queue: no Redis needed on the device), on the same pairs and basis.

The service's worker runs the encoder eagerly, so the like-for-like ratio is against the eager in-process run;
the compiled in-process rate is the in-process ceiling. Rounds alternate in-process, raw and JPEG bodies.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import psutil
import torch
from safetensors.torch import save

from bench.scorer_throughput import in_process, smooth_pairs, through_service
from genview.basis import DEFAULT_OWNER, BasisStore
from genview.client import jpeg_pairs_body
from genview.method.pca import fit_pca_basis
from genview.models.scorer_encoder import ScorerEncoder
from genview.scoring import PairScorer
from genview.store import ObjectStore
from harness.processes import service_env, start_api

ROUNDS = 2
CONCURRENCY = 2


def scorer_runs(args: argparse.Namespace) -> dict:
    """Median pairs/s in-process (eager, compiled) and through the service (raw and JPEG bodies), and ratios."""
    work = Path(tempfile.mkdtemp(prefix="genview-gpu-suite-"))
    cache, store_url = str(work / "cache"), f"file://{work / 'store'}"
    pairs_each = args.scorer_batch // 2
    encoder = ScorerEncoder.load(args.scorer, args.device, cache)
    scorer = PairScorer(encoder, pairs_each)  # as the service builds it (max_batch = GENVIEW_MAX_SCORE_PAIRS)
    batches = [smooth_pairs(pairs_each, seed) for seed in range(args.scorer_requests)]
    basis = fit_pca_basis(encoder.tokens(batches[0][:16].flatten(0, 1)), encoder.grid)
    BasisStore(ObjectStore(store_url), encoder.encoder_id).save(basis, DEFAULT_OWNER)
    env = service_env(model="tiny", scorer_model=args.scorer, device=args.device, model_cache=cache,
                      store_url=store_url, max_score_pairs=str(pairs_each))
    api, base = start_api("serve", env, work)
    runs: dict[str, list[float]] = {"in_process": [], "service_raw": [], "service_jpeg": []}
    try:
        service = psutil.Process(api.popen.pid)
        scorer.score(batches[0], basis)  # warm-up, both sides
        through_service(base, [save({"pairs": batches[0]})], pairs_each, 1, service)
        bodies = {"service_raw": [save({"pairs": p}) for p in batches],
                  "service_jpeg": [jpeg_pairs_body(p) for p in batches]}
        for _ in range(ROUNDS):
            runs["in_process"].append(in_process(scorer, batches, basis))
            for name, sent in bodies.items():
                runs[name].append(through_service(base, sent, pairs_each, CONCURRENCY, service)[0])
    finally:
        api.stop()
    median = {f"{name}_pairs_per_s": statistics.median(rates) for name, rates in runs.items()}
    encoder.compile()  # CUDA only
    scorer.score(batches[0], basis)  # compiles
    compiled = in_process(scorer, batches, basis)
    return {"model": args.scorer, "dtype": str(encoder.dtype), "pairs_per_request": pairs_each,
            "requests_per_run": len(batches), "rounds": ROUNDS, "concurrency": CONCURRENCY,
            "service": "genview serve (API + scorer worker, one process, in-memory queue), file:// store, fitted basis",
            "runs_pairs_per_s": runs, **median, "in_process_compiled_pairs_per_s": compiled,
            "compiled": torch.device(args.device).type == "cuda",
            "raw_over_in_process": median["service_raw_pairs_per_s"] / median["in_process_pairs_per_s"],
            "jpeg_over_in_process": median["service_jpeg_pairs_per_s"] / median["in_process_pairs_per_s"]}
