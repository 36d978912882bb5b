"""docker-compose.yml: valid, wired consistently, and its four GenView services run as local processes.

The end-to-end test starts generator-api, generator-worker, scorer-api and scorer-worker from the compose
file's own `command` (through the image's ENTRYPOINT, read from the service's Dockerfile) and `environment`
(with `${VAR:-default}` resolved as compose does), changing only what a container has and this machine has
not: hostnames (redis → the test's Redis, minio → a moto S3 server), the bucket, free local ports, tiny
presets on the CPU. A /generate and a /score round trip then pass through that wiring.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
import yaml

from genview.settings import Settings
from harness.compose import interpolate, resolve_variables
from harness.images import png_bytes
from harness.ports import free_port
from harness.processes import Proc, wait_http
from tests.test_dockerfiles import ROLES, stages

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
APIS = {"generator-api": "generator", "scorer-api": "scorer"}
WORKERS = {"generator-worker": "generator", "scorer-worker": "scorer"}
GENVIEW_SERVICES = [*APIS, *WORKERS]
# GENVIEW_* variables read by docker/entrypoint.py, not by the settings class
ENTRYPOINT_VARS = {"GENVIEW_GPU_SLOTS_DIR", "GENVIEW_WORKERS_PER_GPU", "GENVIEW_GPU_COUNT"}

# the secrets compose refuses to start without (an operator puts them in .env)
SECRETS = {"MINIO_ROOT_PASSWORD": "root-secret-for-tests", "MINIO_SERVICE_PASSWORD": "service-secret-for-tests",
           "REDIS_PASSWORD": "redis-secret-for-tests"}


def load_compose(env: Mapping[str, str] | None = None) -> dict:
    """docker-compose.yml with anchors merged and variables resolved against `env` (default: only the secrets set)."""
    return resolve_variables(yaml.safe_load(COMPOSE_FILE.read_text()), SECRETS if env is None else env)


def service_environment(service: dict) -> dict[str, str]:
    """A service's `environment` (mapping or KEY=VALUE list) as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in environment.items()}


def flag(argv: list[str], name: str) -> str:
    """The value after `name` in an argument list."""
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def dockerfile_entrypoint(service: dict) -> list[str]:
    """The service's `entrypoint`, else the exec-form ENTRYPOINT of the Dockerfile target it is built from."""
    if "entrypoint" in service:
        return list(service["entrypoint"])
    build = service["build"]
    steps = stages(REPO / build.get("context", ".") / build["dockerfile"])[build["target"]]
    entrypoints = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    return json.loads(entrypoints[-1]) if entrypoints else []


FAKE_MC = """#!{python}
import json, os, sys
with open(os.environ["MC_LOG"], "a") as log:
    log.write(json.dumps({{"args": sys.argv[1:], "stdin": sys.stdin.read()}}) + "\\n")
"""


def run_minio_init(compose: dict, tmp_path: Path) -> list[dict]:
    """Run minio-init's script here with a stand-in `mc` that records its calls (argv and stdin)."""
    service = compose["services"]["minio-init"]
    assert service["entrypoint"][:2] == ["/bin/sh", "-c"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "mc").write_text(FAKE_MC.format(python=sys.executable))
    (bin_dir / "mc").chmod(0o755)
    log = tmp_path / "mc.jsonl"
    log.unlink(missing_ok=True)
    env = {**service_environment(service), "PATH": f"{bin_dir}:/usr/bin:/bin", "MC_LOG": str(log)}
    done = subprocess.run(["/bin/sh", "-c", *service["command"]], env=env, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


def bucket_created_by_minio_init(compose: dict, tmp_path: Path) -> str:
    (bucket,) = [c["args"][-1].removeprefix("local/") for c in run_minio_init(compose, tmp_path) if c["args"][0] == "mb"]
    return bucket


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


# --- the file itself ---------------------------------------------------------------------------------

def test_compose_file_validates_and_only_the_trainer_has_a_profile():
    assert shutil.which("docker-compose"), "Debian's docker-compose is not installed: apt-get install -y docker-compose"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "GENVIEW_"))}
    run = lambda *args, env=env | SECRETS: subprocess.run(  # noqa: E731
        ["docker-compose", "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True, timeout=120, env=env)
    assert (checked := run("config", "-q")).returncode == 0, checked.stderr
    for secret in SECRETS:  # any secret missing: compose refuses and names it
        refused = run("config", "-q", env=env | {k: v for k, v in SECRETS.items() if k != secret})
        assert refused.returncode != 0 and secret in refused.stdout + refused.stderr
    normalised = yaml.safe_load(run("--profile", "trainer", "config").stdout)["services"]
    assert set(normalised) == {"redis", "minio", "minio-init", *GENVIEW_SERVICES, "trainer"}
    assert normalised["trainer"]["profiles"] == ["trainer"]
    assert all("profiles" not in service for name, service in normalised.items() if name != "trainer")


def test_the_test_scripts_compose_check_passes_without_any_secret_set():
    """scripts/test (README command 2) checks the file with placeholder secrets: it must name every required one."""
    checks = [line for line in (REPO / "scripts" / "test").read_text().splitlines()
              if "docker-compose -f docker-compose.yml config" in line and not line.lstrip().startswith("#")]
    assert len(checks) == 1, checks
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "GENVIEW_", "REDIS_"))}
    checked = subprocess.run(["bash", "-euc", checks[0]], cwd=REPO, capture_output=True, text=True, timeout=120,
                             env=env)
    assert checked.returncode == 0, checked.stderr


def test_interpolation_follows_compose_rules():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $SET $$SET ${SET}", env) == "x d d  x $SET x"
    with pytest.raises(ValueError):
        interpolate("${UNSET:?needed}", env)
    assert load_compose({**SECRETS, "GENVIEW_MODEL": "tiny"})["services"]["generator-worker"]["environment"]["GENVIEW_MODEL"] == "tiny"


def test_services_are_wired_to_redis_minio_and_each_other(compose, tmp_path):
    services = compose["services"]
    assert set(services) == {"redis", "minio", "minio-init", *GENVIEW_SERVICES, "trainer"}

    redis_service = services["redis"]
    assert flag(redis_service["command"], "--appendonly") == "yes"
    password = flag(redis_service["command"], "--requirepass")
    assert password == SECRETS["REDIS_PASSWORD"] == redis_service["environment"]["REDISCLI_AUTH"]
    assert any(str(v).endswith(":/data") for v in redis_service["volumes"])
    assert "redis-cli" in redis_service["healthcheck"]["test"] and "ping" in redis_service["healthcheck"]["test"]
    minio = services["minio"]
    minio_port = flag(minio["command"], "--address").rsplit(":", 1)[1]
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["minio-init"]["restart"] == "no"
    bucket = bucket_created_by_minio_init(compose, tmp_path)

    environments = {name: service_environment(services[name]) for name in GENVIEW_SERVICES}
    for name, env in environments.items():
        service = services[name]
        redis_url, endpoint = urlsplit(env["GENVIEW_REDIS_URL"]), urlsplit(env["GENVIEW_S3_ENDPOINT_URL"])
        assert redis_url.scheme == "redis" and redis_url.hostname == "redis" and redis_url.port == 6379, name
        assert endpoint.hostname == "minio" and str(endpoint.port) == minio_port, name
        store = urlsplit(env["GENVIEW_STORE_URL"])
        assert store.scheme == "s3" and store.hostname == bucket, f"{name} stores in a bucket minio-init does not create"
        init_env = services["minio-init"]["environment"]
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (init_env["SERVICE_USER"], init_env["SERVICE_PASSWORD"])
        assert env["AWS_ACCESS_KEY_ID"] != minio["environment"]["MINIO_ROOT_USER"], f"{name} connects as MinIO's admin"
        assert env["AWS_SECRET_ACCESS_KEY"] not in minio["environment"].values(), name
        assert env["GENVIEW_STORE_URL"] == init_env["STORE_URL"], name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert service["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name
        assert any(str(v).endswith(":/cache") for v in service["volumes"]), f"{name} has no model cache volume"
        assert service["healthcheck"]["test"][0] == "CMD", name
        unknown = {k for k in env if k.startswith("GENVIEW_")} - ENTRYPOINT_VARS - {
            f"GENVIEW_{field.upper()}" for field in Settings.model_fields}
        assert not unknown, f"{name} sets GENVIEW_* variables that no setting reads: {unknown}"
    for name, env in environments.items():  # every service authenticates to Redis with its password
        assert urlsplit(env["GENVIEW_REDIS_URL"]).password == password, name
    for name in APIS:  # anonymous on purpose only because the APIs are published on loopback (see below)
        assert environments[name]["GENVIEW_ALLOW_ANONYMOUS"] == "true" and not environments[name]["GENVIEW_API_KEYS"]
    assert not any("GENVIEW_ALLOW_ANONYMOUS" in environments[name] for name in WORKERS)
    # an API and its workers must agree on everything that names a job or a stored object
    for key in ("GENVIEW_REDIS_URL", "GENVIEW_STORE_URL", "GENVIEW_S3_ENDPOINT_URL", "GENVIEW_MODEL",
                "GENVIEW_SCORER_MODEL", "GENVIEW_API_KEYS"):
        assert len({env.get(key) for env in environments.values()}) == 1, f"services disagree on {key}"

    for name in APIS:
        command, service = services[name]["command"], services[name]
        port = flag(command, "--port")
        assert flag(command, "--host") == "0.0.0.0"
        assert [str(p).rsplit(":", 1)[1] for p in service["ports"]] == [port], f"{name} publishes another port"
        assert [str(p).split(":")[0] for p in service["ports"]] == ["127.0.0.1"], f"{name} is open to the network"
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
    for name in WORKERS:
        service = services[name]
        assert "container_name" not in service and "ports" not in service, f"{name} cannot be scaled"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d["capabilities"] for d in devices), f"{name} reserves no GPU"
        assert name in service["healthcheck"]["test"]
        assert environments[name]["GENVIEW_DEVICE"] == "cuda"
    assert environments["generator-worker"]["GENVIEW_GPU_SLOTS_DIR"] != environments["scorer-worker"]["GENVIEW_GPU_SLOTS_DIR"]

    trainer = services["trainer"]
    assert trainer["profiles"] == ["trainer"]
    command = trainer["command"]
    assert command[:2] == ["python", "trainer/run.py"]
    for option, api in (("--generator-url", "generator-api"), ("--scorer-url", "scorer-api")):
        url = urlsplit(flag(command, option))
        assert url.hostname == api and str(url.port) == flag(services[api]["command"], "--port"), option
        assert trainer["depends_on"][api]["condition"] == "service_healthy"
    assert any("gpu" in d["capabilities"] for d in trainer["deploy"]["resources"]["reservations"]["devices"])


def test_minio_init_gives_the_services_a_bucket_scoped_user_and_expires_inputs(compose, tmp_path):
    env = service_environment(compose["services"]["minio-init"])
    calls = run_minio_init(compose, tmp_path)
    commands = [" ".join(c["args"][:3]) for c in calls]
    assert commands == ["alias set local", "mb --ignore-existing local/genview", "admin user add",
                        "admin policy create", "admin policy attach", "ilm import local/genview"]
    assert calls[0]["args"][3:] == ["http://minio:9000", env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]]
    assert calls[2]["args"][3:] == ["local", env["SERVICE_USER"], env["SERVICE_PASSWORD"]]
    policy_name, policy_file = calls[3]["args"][4:]
    assert calls[4]["args"][3:] == ["local", policy_name, "--user", env["SERVICE_USER"]]
    policy = json.loads(Path(policy_file).read_text())
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::genview", "arn:aws:s3:::genview/*"}  # this bucket and nothing else
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions
    assert not any(a.startswith("admin:") or a == "s3:*" for a in actions)
    store_prefix = urlsplit(env["STORE_URL"]).path.strip("/")

    def expiry(calls: list[dict]) -> dict[str, int]:
        """Days to expiry by prefix, from the lifecycle document imported last (it replaces any earlier one)."""
        assert " ".join(calls[-1]["args"][:3]) == "ilm import local/genview"
        rules = json.loads(calls[-1]["stdin"])["Rules"]
        assert all(r["Status"] == "Enabled" for r in rules)
        return {r["Filter"]["Prefix"].removeprefix(f"{store_prefix}/"): r["Expiration"]["Days"] for r in rules}

    assert expiry(calls) == {"inputs/": 30, "score-bodies/": 1}  # bodies a crashed scorer worker left behind
    kept = run_minio_init(load_compose({**SECRETS, "GENVIEW_INPUT_TTL_DAYS": "0"}), tmp_path)
    assert expiry(kept) == {"score-bodies/": 1}  # 0 keeps inputs forever
    week = run_minio_init(load_compose({**SECRETS, "GENVIEW_INPUT_TTL_DAYS": "7"}), tmp_path)
    assert expiry(week) == {"inputs/": 7, "score-bodies/": 1}


def test_secure_defaults_bind_pin_and_build():
    with pytest.raises(ValueError, match="MINIO_ROOT_PASSWORD"):
        load_compose({"MINIO_SERVICE_PASSWORD": "x"})
    with pytest.raises(ValueError, match="MINIO_SERVICE_PASSWORD"):
        load_compose({"MINIO_ROOT_PASSWORD": "x"})
    opened = load_compose({**SECRETS, "GENVIEW_BIND": "0.0.0.0"})["services"]  # the operator opts in
    assert [str(p).split(":")[0] for name in APIS for p in opened[name]["ports"]] == ["0.0.0.0"] * 2
    services = load_compose()["services"]
    for name in ("redis", "minio", "minio-init"):
        assert re.fullmatch(r"[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}", services[name]["image"]), name
    for name, service in services.items():
        if "build" in service:
            assert service["build"]["dockerfile"] == "docker/Dockerfile", name
            assert service["build"]["target"] in ROLES and service["build"]["target"] in name, name


def test_trainer_command_parses_with_the_trainer(compose):
    """The trainer service's arguments are ones trainer/run.py accepts."""
    from trainer.run import parse_args

    args = parse_args(compose["services"]["trainer"]["command"][2:])
    assert args.generator_url == "http://generator-api:8000" and args.scorer_url == "http://scorer-api:8001"
    assert args.method == "mocov3" and args.arch == "vit_small" and args.resume


# --- the services, started as compose would start them -----------------------------------------------

def local_argv(argv: list[str], ports: dict[str, str]) -> list[str]:
    """A container argument list for this machine: the venv's python, /app → the checkout, genview → this
    interpreter's module, --host on loopback, container ports → free local ports."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        previous = argv[i - 1] if i else ""
        if arg == "python":
            out.append(sys.executable)
        elif arg == "genview":
            out += [sys.executable, "-m", "services.cli"]
        elif arg.startswith("/app/"):
            out.append(str(REPO / arg.removeprefix("/app/")))
        elif previous == "--host":
            out.append("127.0.0.1")
        elif previous == "--port":
            out.append(ports.setdefault(arg, str(free_port())))
        else:
            for container_port, local_port in ports.items():
                arg = arg.replace(f"127.0.0.1:{container_port}/", f"127.0.0.1:{local_port}/")
            out.append(arg)
    return out


def local_env(service: dict, redis_url: str, s3_endpoint: str, s3_bucket: str, model_cache: str,
              tmp_path: Path) -> dict[str, str]:
    """The service's compose environment with hostnames and cluster paths replaced, tiny CPU presets."""
    env = service_environment(service)
    replaced = {"GENVIEW_REDIS_URL": redis_url, "GENVIEW_S3_ENDPOINT_URL": s3_endpoint,
                "GENVIEW_STORE_URL": s3_bucket, "GENVIEW_MODEL": "tiny", "GENVIEW_SCORER_MODEL": "tiny",
                "GENVIEW_DEVICE": "cpu", "GENVIEW_MODEL_CACHE": model_cache}
    if "GENVIEW_GPU_SLOTS_DIR" in env:
        replaced["GENVIEW_GPU_SLOTS_DIR"] = str(tmp_path / "gpu-slots")
    env.update(replaced)
    leftover = {k: v for k, v in env.items() if re.search(r"//(redis|minio|generator-api|scorer-api)\b", v)}
    assert not leftover, f"compose hostnames this test does not replace: {leftover}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GENVIEW_", "AWS_"))}
    return {**base, **env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def healthy(service: dict, ports: dict[str, str]) -> bool:
    """Run the service's compose health check here."""
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD"
    return subprocess.run(local_argv(test[1:], ports), capture_output=True, timeout=30).returncode == 0


@pytest.mark.slow
def test_compose_services_round_trip_as_local_processes(compose, fresh_redis_url, s3_endpoint, s3_bucket,
                                                         model_cache, tmp_path):
    services = compose["services"]
    procs: dict[str, Proc] = {}
    ports: dict[str, dict[str, str]] = {}
    try:
        for name in GENVIEW_SERVICES:
            service = services[name]
            ports[name] = {}
            argv = local_argv([*dockerfile_entrypoint(service), *service["command"]], ports[name])
            env = local_env(service, fresh_redis_url, s3_endpoint, s3_bucket, model_cache, tmp_path)
            procs[name] = Proc(argv, env, tmp_path / f"{name}.log")
        bases = {}
        for name in APIS:
            (port,) = ports[name].values()
            bases[name] = f"http://127.0.0.1:{port}"
            wait_http(f"{bases[name]}/healthz", procs[name])
            assert httpx.get(f"{bases[name]}/readyz", timeout=10).json() == {"status": "ready"}

        image = png_bytes(64, 48, seed=5)
        r = httpx.post(f"{bases['generator-api']}/generate", params={"wait": "true", "timeout": "120"},
                       files={"image": ("x.png", image, "image/png")},
                       data={"steps": "2", "size": "32", "noise_level": "auto:per-image"}, timeout=150)
        assert r.status_code == 200 and r.json()["status"] == "done", (r.text, procs["generator-worker"].tail())
        view = httpx.get(bases["generator-api"] + r.json()["views"][0]["url"], timeout=30)
        assert view.status_code == 200 and view.content[:8] == b"\x89PNG\r\n\x1a\n"

        s = httpx.post(f"{bases['scorer-api']}/score", files={"original": ("o.png", image), "view": ("v.png", view.content)},
                       params={"basis": "per-image"}, timeout=120)
        assert s.status_code == 200, (s.text, procs["scorer-worker"].tail())
        assert set(s.json()) >= {"s_f", "s_b", "q"} and -2 <= s.json()["q"] <= 2

        # the objects went to the S3 server in place of MinIO, under the compose file's prefix
        bucket, prefix = s3_bucket.removeprefix("s3://").split("/", 1)
        listing = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").list_objects_v2(Bucket=bucket)
        keys = [o["Key"] for o in listing.get("Contents", [])]
        for kind in ("inputs/", "views/", "scores/"):
            assert any(k.startswith(f"{prefix}/{kind}") for k in keys), f"nothing under {kind} in S3: {keys}"

        # each service's own compose health check, run here, passes; a stopped API's fails (the worker
        # check's failing side is tested on a fake /proc in test_dockerfiles.py: other test sessions on
        # this machine may run workers of their own)
        for name in GENVIEW_SERVICES:
            test = shlex.join(services[name]["healthcheck"]["test"])
            assert healthy(services[name], ports[name]), f"{name} health check fails: {test}"
        procs.pop("generator-api").stop()
        assert not healthy(services["generator-api"], ports["generator-api"])
    finally:
        for proc in procs.values():
            proc.stop()
