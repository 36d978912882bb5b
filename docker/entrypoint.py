"""Container entrypoint: give each replica of a scaled GPU worker its own GPU, then exec the command.

`docker compose up --scale generator-worker=4` starts four identical containers, and Docker hands every
one of them the same GPUs (it keeps no per-replica assignment), so all four would run on GPU 0. When
GENVIEW_GPU_SLOTS_DIR is set (compose sets it for the workers, on a volume their replicas share), the
command will use CUDA (GENVIEW_DEVICE auto or cuda) and CUDA_VISIBLE_DEVICES is not already set, this
script takes the first free slot of n_gpus × GENVIEW_WORKERS_PER_GPU (default 1) with an exclusive
`flock` on `slot-<i>.lock`, keeps the lock for the life of the process (the descriptor survives `exec`,
and the kernel releases it when the container stops, however it stops) and sets
CUDA_VISIBLE_DEVICES=<i mod n_gpus>. With every slot taken it exits 1 and says why. The number of GPUs
is the number of /dev/nvidia<N> device nodes, or GENVIEW_GPU_COUNT when set.

Anything else (the APIs, CPU runs, an explicit CUDA_VISIBLE_DEVICES or cuda:N) runs the command unchanged.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import sys


def gpu_count(dev: str = "/dev") -> int:
    """GPUs visible in this container: GENVIEW_GPU_COUNT, else the /dev/nvidia<N> device nodes."""
    if os.environ.get("GENVIEW_GPU_COUNT"):
        return int(os.environ["GENVIEW_GPU_COUNT"])
    try:
        return sum(1 for name in os.listdir(dev) if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return 0


def claim_gpu_slot(slots_dir: str, n_gpus: int, per_gpu: int) -> tuple[int, int] | None:
    """Lock the first free slot; returns (slot, its inheritable locked fd), or None when all are taken."""
    os.makedirs(slots_dir, exist_ok=True)
    for slot in range(n_gpus * per_gpu):
        fd = os.open(os.path.join(slots_dir, f"slot-{slot}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        os.set_inheritable(fd, True)  # held by the exec'd command until it exits
        return slot, fd
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: entrypoint.py COMMAND [ARG ...]", file=sys.stderr)
        return 1
    slots_dir = os.environ.get("GENVIEW_GPU_SLOTS_DIR")
    device = os.environ.get("GENVIEW_DEVICE", "auto")
    n_gpus = gpu_count()
    if slots_dir and device in ("auto", "cuda") and "CUDA_VISIBLE_DEVICES" not in os.environ and n_gpus > 0:
        per_gpu = int(os.environ.get("GENVIEW_WORKERS_PER_GPU", "1"))
        claimed = claim_gpu_slot(slots_dir, n_gpus, per_gpu)
        if claimed is None:
            print(f"entrypoint: all {n_gpus * per_gpu} GPU slots in {slots_dir} are taken "
                  f"({n_gpus} GPUs x GENVIEW_WORKERS_PER_GPU={per_gpu}); scale this service down "
                  "or raise GENVIEW_WORKERS_PER_GPU", file=sys.stderr)
            return 1
        slot, _fd = claimed
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % n_gpus)
        print(f"entrypoint: GPU slot {slot} -> CUDA_VISIBLE_DEVICES={slot % n_gpus}", file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
