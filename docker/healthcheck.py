"""Container health check, standard library only (fast to start, no project imports).

    healthcheck.py URL              healthy when GET URL answers 200 (the APIs: /healthz)
    healthcheck.py --process NAME   healthy when a live process has NAME as an argument
                                    (the workers: `generator-worker`, `scorer-worker`; the trainer: `trainer/run.py`)

Exit status 0 = healthy, 1 = unhealthy (what Docker's HEALTHCHECK expects).
"""

from __future__ import annotations

import os
import sys
import urllib.request


def http_ok(url: str, timeout: float = 4.0) -> bool:
    """True when GET url answers 200 (proxies from the environment are ignored: this is a local check)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def process_running(name: str, proc: str = "/proc") -> bool:
    """True when a process other than a health check is alive (not a zombie) with `name` as an argument."""
    me = os.getpid()
    for pid in os.listdir(proc):
        if not pid.isdigit() or int(pid) == me:
            continue
        try:
            with open(f"{proc}/{pid}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open(f"{proc}/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if state in ("Z", "X") or any(a.endswith("healthcheck.py") for a in args):
            continue
        if any(a == name or a.endswith("/" + name) for a in args):
            return True
    return False


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--process":
        return 0 if process_running(argv[1]) else 1
    if len(argv) == 1 and argv[0].startswith(("http://", "https://")):
        return 0 if http_ok(argv[0]) else 1
    print(__doc__, file=sys.stderr)
    return 1  # a wrong health check is unhealthy (Docker reserves exit status 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
