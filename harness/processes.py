"""Starting the project's real commands (`genview …`) as processes, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from harness.ports import free_port


class Proc:
    """A child process with its output in a log file (shown when a wait fails).

    Every Proc is remembered until stopped: `stop_all()` (called by tests/conftest.py after each test
    module) stops the ones a test replaced or forgot, so none outlives its module.
    """

    live: set[Proc] = set()

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._log_file = open(log, "wb")
        self.popen = subprocess.Popen(args, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)
        Proc.live.add(self)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            self.popen.wait(30)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if that takes over 30 s."""
        try:
            terminate(self.popen, 30)
        finally:
            self._log_file.close()
            Proc.live.discard(self)


def terminate(popen: subprocess.Popen, timeout: float) -> None:
    """SIGTERM `popen` and wait; SIGKILL if it has not exited within `timeout` seconds."""
    popen.terminate()
    try:
        popen.wait(timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait(timeout)


def stop_all() -> None:
    """Stop every Proc still running (SIGTERM, then the 30 s wait of `Proc.kill`)."""
    for proc in list(Proc.live):
        proc.stop()


def genview_cmd(*args: str) -> list[str]:
    """The `genview` console script, run with this interpreter."""
    return [sys.executable, "-m", "services.cli", *args]


def wait_http(url: str, proc: Proc, timeout: float = 300.0) -> None:
    """Block until GET url answers 200, failing early with the log if the process died (so a long timeout
    costs nothing when it starts: it covers start-up on a loaded 2-core machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"process exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up:\n{proc.tail()}")


def start_api(command: str, env: dict[str, str], logdir: Path, port: int | None = None) -> tuple[Proc, str]:
    """Run `genview <command> --port P` and wait until /healthz answers; returns (proc, base URL)."""
    port = port or free_port()
    proc = Proc(genview_cmd(command, "--host", "127.0.0.1", "--port", str(port)), env,
                logdir / f"{command}-{port}.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc)
    return proc, base


def start_worker(command: str, env: dict[str, str], logdir: Path, name: str = "") -> Proc:
    """Run `genview <command>` (a worker) in the background."""
    return Proc(genview_cmd(command), env, logdir / f"{command}{name}-{time.monotonic_ns()}.log")


def service_env(**genview: str) -> dict[str, str]:
    """This process's environment plus GENVIEW_* settings, one CPU thread per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENVIEW_")}
    env.update({f"GENVIEW_{k.upper()}": str(v) for k, v in genview.items()})
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    return env


def start_tiny_serve(root: Path, model_cache: str, **genview: str) -> tuple[Proc, str]:
    """`genview serve` with the tiny presets on the CPU and a file store under `root`; returns (proc, base URL)."""
    env = service_env(model="tiny", scorer_model="tiny", device="cpu", model_cache=model_cache,
                      store_url=f"file://{root / 'data'}", **genview)
    return start_api("serve", env, root)
