"""Peak memory and time of the chunked weighted kNN (`trainer.evaluate.knn_topk`) as the training bank grows.

Each size runs in a fresh process so its peak RSS is its own; the baseline is the RSS of a process that has
imported torch and allocated nothing. Features are L2-normalised random 2048-d vectors stored in fp16 (the
similarity of unit vectors needs ~3 significant digits; fp16 halves the bank: 200k × 2048 × 2 B = 0.82 GB).
Time is for `--queries` queries and is linear in queries × bank rows, which gives the extrapolation.

    OMP_NUM_THREADS=1 python -m bench.knn_memory --out bench/results/knn_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch

from bench.report import emit

IMAGENET_TRAIN, IMAGENET_VAL = 1_281_167, 50_000


def random_bank(n: int, d: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors in fp16, generated in blocks so no fp32 copy of the whole bank ever exists."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.empty(n, d, dtype=torch.float16)
    for start in range(0, n, 8192):
        block = torch.randn(min(8192, n - start), d, generator=g)
        feats[start:start + block.shape[0]] = torch.nn.functional.normalize(block, dim=1).half()
    return feats, torch.randint(0, classes, (n,), generator=g)


def one_size(n: int, d: int, queries: int, chunk: int, train_chunk: int, device: str) -> dict:
    """Run in a child process: build the bank, time knn_topk, report this process's peak RSS (and GPU memory)."""
    from trainer.evaluate import knn_topk

    train, train_labels = (t.to(device) for t in random_bank(n, d, 1000, seed=0))
    query, query_labels = (t.to(device) for t in random_bank(queries, d, 1000, seed=1))
    if device == "cuda":
        knn_topk(train, train_labels, query[:chunk], query_labels[:chunk], chunk=chunk, train_chunk=train_chunk)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    acc = knn_topk(train, train_labels, query, query_labels, chunk=chunk, train_chunk=train_chunk)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    gpu = {"gpu_peak_bytes": torch.cuda.max_memory_allocated()} if device == "cuda" else {}
    return {"n": n, "seconds": seconds, "peak_rss_bytes": peak, "bank_bytes": train.numel() * 2,
            "top1": {str(k): v for k, v in acc.items()}, **gpu}


def child(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "bench.knn_memory", "--child", *args], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="50000,100000,200000")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--train-chunk", type=int, default=16384)
    ap.add_argument("--device", default="cpu", help="cpu | cuda (the bank on the GPU)")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child is not None:
        n = int(args.child[0]) if args.child else 0
        if n == 0:
            print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
        else:
            print(json.dumps(one_size(n, args.dim, args.queries, args.chunk, args.train_chunk, args.device)))
        return
    common = ["--device", args.device, "--dim", str(args.dim), "--queries", str(args.queries), "--chunk", str(args.chunk),
              "--train-chunk", str(args.train_chunk), "--child"]
    baseline = child(*common, "0")["peak_rss_bytes"]
    runs = [child(*common, n) for n in args.sizes.split(",")]
    for r in runs:
        r["peak_above_baseline_bytes"] = r["peak_rss_bytes"] - baseline
    first, last = runs[0], runs[-1]
    per_row = ((last["peak_rss_bytes"] - first["peak_rss_bytes"]) / (last["n"] - first["n"])  # linear fit
               if len(runs) > 1 else last["peak_above_baseline_bytes"] / last["n"])
    rate = last["seconds"] / (args.queries * last["n"])  # s per (query × bank row) on this machine
    bank_1m = IMAGENET_TRAIN * args.dim * 2
    emit({"benchmark": "knn_memory", "machine": torch.cuda.get_device_name() if args.device == "cuda" else
          platform.processor() or platform.machine(), "device": args.device,
          "threads": torch.get_num_threads(), "dim": args.dim, "dtype": "float16", "queries": args.queries,
          "chunk": args.chunk, "train_chunk": args.train_chunk, "baseline_rss_bytes": baseline, "runs": runs,
          "under_2gb_at_200k": all(r["peak_rss_bytes"] < 2 * 1024 ** 3 for r in runs if r["n"] == 200_000),
          "extrapolation_imagenet": {
              "n": IMAGENET_TRAIN, "bank_bytes": bank_1m,
              "bytes_per_bank_row_measured": per_row,
              "peak_rss_bytes_estimate": last["peak_rss_bytes"] + per_row * (IMAGENET_TRAIN - last["n"]),
              "seconds_for_50k_val_queries_this_cpu": rate * IMAGENET_VAL * IMAGENET_TRAIN,
              "note": "bank of a 1.28 M training set in fp16 is 5.2 GB; each rank of a multi-GPU run holds it on "
                      "the GPU (one 80 GB card: fine), the per-chunk workspace stays chunk × train_chunk × 4 B"}},
         args.out)


if __name__ == "__main__":
    main()
