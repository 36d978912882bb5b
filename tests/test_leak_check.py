"""The end-of-session check in tests/conftest.py: a run that leaves a child process behind fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LEAKY = """
import subprocess, sys
from harness.processes import Proc

def test_leaves_processes(tmp_path):
    Proc([sys.executable, "-c", "import time; time.sleep(120)"], {}, tmp_path / "p.log")  # stopped after the module
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(121)"])               # leaked
"""


@pytest.mark.slow  # a nested pytest session
def test_a_leaked_child_process_fails_the_session_and_is_killed(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           str(tmp_path / "test_leaky.py")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout[-2000:]
    assert "1 passed" in done.stdout and "LEAKED PROCESSES" in done.stdout
    assert "sleep(121)" in done.stdout and "sleep(120)" not in done.stdout  # the Proc was stopped, not leaked
    survivors = subprocess.run(["pgrep", "-f", "time.sleep\\(121\\)"], capture_output=True, text=True).stdout
    assert not survivors.strip(), f"the leaked process was not killed: {survivors}"
