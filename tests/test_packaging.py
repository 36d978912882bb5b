"""The package as users get it: sdist and wheel built and checked, the wheel installed into a fresh venv
and used outside the repository; the extras as pyproject.toml defines them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("genview", "services", "trainer")
SERVICE_STACK = ("fastapi", "starlette", "uvicorn", "redis", "s3fs", "prometheus_client")
PUBLIC_API_CHECK = f"""
import sys
import genview
from genview import *
assert genview.__file__.startswith(sys.prefix), genview.__file__  # the installed copy, not the checkout
names = [getattr(genview, name) for name in genview.__all__]
loaded = [m for m in {SERVICE_STACK!r} if m in sys.modules]
assert not loaded, f"the public API imported the service stack: {{loaded}}"
print(len(names), "public names")
"""


def run(*args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def package_data_files() -> set[str]:
    """Non-Python files git tracks inside the packages: the wheel must carry them all."""
    tracked = run("git", "ls-files", *PACKAGES, cwd=REPO).stdout.split()
    return {path for path in tracked if not path.endswith(".py")}


def test_extras_split_by_role():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    assert not any(name in core for name in ("fastapi", "uvicorn", "redis", "s3fs", "timm", "ray", "pytest"))
    assert not any(name in " ".join(extras["train"]) for name in ("fastapi", "uvicorn", "redis", "s3fs"))
    assert not any(name in " ".join(extras["serve"]) for name in ("timm", "tensorboard", "ray"))
    assert "genview[serve,train,ray,wandb,mlflow]" in extras["dev"]
    assert all("==" not in req for req in project["dependencies"]), "exact pins belong in constraints.txt"
    pinned = {line.split("==")[0].lower() for line in (REPO / "constraints.txt").read_text().splitlines()
              if "==" in line}
    assert {"torch", "torchvision", "diffusers", "transformers", "open_clip_torch"} <= pinned


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_wheel_installs_into_a_fresh_venv_and_works_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", dist, REPO, cwd=tmp_path)
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    run(sys.executable, "-m", "twine", "check", "--strict", wheel, sdist, cwd=tmp_path)
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    assert package_data_files() <= in_wheel, f"package data left out: {package_data_files() - in_wheel}"
    assert {f"{p}/__init__.py" for p in PACKAGES} <= in_wheel

    venv = tmp_path / "venv"  # system site-packages: torch and friends are not downloaded again
    run(sys.executable, "-m", "venv", "--system-site-packages", venv, cwd=tmp_path)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    run(python, "-m", "pip", "install", "--no-input", "-c", REPO / "constraints.txt", f"genview[train] @ {wheel.as_uri()}",
        cwd=tmp_path)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert run(bin_dir / "genview", "--version", cwd=tmp_path).stdout.strip() == f"genview {version}"
    assert "public names" in run(python, "-c", PUBLIC_API_CHECK, cwd=tmp_path).stdout
