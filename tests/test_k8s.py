"""The Kubernetes base (deploy/k8s): render it as `kubectl kustomize` would, validate every object, check the rules.

Core objects are validated with `kubernetes-validate` (the API's own JSON schemas, strict: unknown fields fail);
KEDA's ScaledObjects by a structural check against the queue they scale on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from genview.queue import GROUP, RedisJobQueue
from services.generator.app import QUEUE_NAME as GENERATE_QUEUE
from services.scorer.app import QUEUE_NAME as SCORE_QUEUE

BASE = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
K8S_VERSION = "1.30"
CLUSTER_SCOPED = {"Namespace"}
WORKLOADS = {"Deployment", "StatefulSet"}
EXTERNAL_SECRETS = {"genview-s3", "genview-redis", "genview-api-keys"}  # created by the user (README "Run on
# Kubernetes"), never in the base
WORKER_QUEUES = {"generator-worker": GENERATE_QUEUE, "scorer-worker": SCORE_QUEUE}


# --- the renderer: the subset of kustomize this base uses; anything else in the kustomization fails ---

def _add_labels(obj: dict, pairs: dict, include_templates: bool) -> None:
    obj["metadata"].setdefault("labels", {}).update(pairs)
    template = obj.get("spec", {}).get("template")
    if include_templates and template is not None:
        template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_images(obj: dict, images: list[dict]) -> None:
    for container in _containers(obj):
        name = container["image"].split(":")[0]
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"


def render(base: Path = BASE) -> list[dict]:
    """The final object list of a kustomize base: resources, namespace, labels, images."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unknown = set(kustomization) - {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    assert not unknown, f"the test renderer does not implement {unknown}"
    objects = [doc for name in kustomization["resources"]
               for doc in yaml.safe_load_all((base / name).read_text()) if doc]
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED and "namespace" in kustomization:
            obj["metadata"]["namespace"] = kustomization["namespace"]
        for label in kustomization.get("labels", []):
            assert not label.get("includeSelectors"), "selector labels are not implemented"
            _add_labels(obj, label["pairs"], label.get("includeTemplates", False))
        _set_images(obj, kustomization.get("images", []))
    return objects


# --- helpers over the rendered list ---

def _pod_spec(obj: dict) -> dict | None:
    return obj["spec"]["template"]["spec"] if obj["kind"] in WORKLOADS else None


def _containers(obj: dict) -> list[dict]:
    spec = _pod_spec(obj)
    return spec["containers"] + spec.get("initContainers", []) if spec else []


def _by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _selects(selector: dict, labels: dict) -> bool:
    """Label-selector semantics (matchLabels, matchExpressions In/Exists) of Kubernetes."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
    return True


def _pod_labels(objects: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["spec"]["template"]["metadata"]["labels"]
            for o in objects if o["kind"] in WORKLOADS}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render()


def test_core_objects_validate_against_the_kubernetes_schemas(objects):
    core = [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in core} >= {"Namespace", "ConfigMap", "Service", "Deployment", "StatefulSet",
                                        "NetworkPolicy"}
    for obj in core:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)  # raises on any schema violation


def test_renderer_applies_namespace_labels_and_images(objects):
    namespaced = [o for o in objects if o["kind"] not in CLUSTER_SCOPED]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"genview"}
    assert all(o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "genview" for o in objects)
    assert all(labels["app.kubernetes.io/part-of"] == "genview" for labels in _pod_labels(objects).values())
    images = {c["image"] for o in objects for c in _containers(o)}
    assert images == {"genview-generator:dev", "genview-scorer:dev", "redis:7.4.2-alpine"}


def test_scaled_objects_target_the_worker_streams_and_consumer_group(objects):
    deployments = _by_kind(objects, "Deployment")
    scaled = _by_kind(objects, "ScaledObject")
    assert set(scaled) == set(WORKER_QUEUES)
    namespace = yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"]
    for name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert set(so["spec"]) <= {"scaleTargetRef", "minReplicaCount", "maxReplicaCount", "pollingInterval",
                                   "cooldownPeriod", "triggers"}
        assert so["spec"]["scaleTargetRef"]["name"] in deployments
        assert 0 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
        metrics = set()
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            assert trigger["type"] == "redis-streams"
            assert meta["address"] == f"redis.{namespace}.svc.cluster.local:6379"
            assert meta["stream"] == f"genview:{WORKER_QUEUES[name]}:stream"
            assert meta["consumerGroup"] == GROUP
            (metric,) = set(meta) & {"pendingEntriesCount", "lagCount", "streamLength"}
            assert all(isinstance(v, str) for v in meta.values()) and int(meta[metric]) > 0
            metrics.add(metric)
        assert metrics == {"pendingEntriesCount", "lagCount"}


def test_keda_signals_measure_the_real_queue(redis_url):
    """What KEDA reads (XINFO GROUPS lag, XPENDING count) follows jobs on the stream named in keda.yaml."""
    scaled = _by_kind(render(), "ScaledObject")["generator-worker"]
    queue = RedisJobQueue(redis_url, GENERATE_QUEUE, prefix="genview")
    try:
        meta = scaled["spec"]["triggers"][0]["metadata"]
        assert queue.stream == meta["stream"]
        queue.r.delete(queue.stream)
        queue._ensure_group()
        for i in range(3):
            queue.submit({"n": i})
        (group,) = [g for g in queue.r.xinfo_groups(meta["stream"]) if g["name"] == meta["consumerGroup"]]
        assert group["lag"] == 3 and group["pending"] == 0
        deliveries = queue.claim("w1", 2, 100)
        assert queue.r.xpending(meta["stream"], meta["consumerGroup"])["pending"] == 2
        (group,) = queue.r.xinfo_groups(meta["stream"])
        assert group["lag"] == 1
        for d in deliveries:
            queue.complete(d, {})
        assert queue.r.xpending(meta["stream"], meta["consumerGroup"])["pending"] == 0
    finally:
        queue.r.delete(queue.stream)
        queue.close()


def test_pods_run_as_non_root_with_requests_and_limits(objects):
    for obj in objects:
        spec = _pod_spec(obj)
        if spec is None:
            continue
        assert spec["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
        for c in _containers(obj):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (obj["metadata"]["name"], kind)


def test_workers_take_one_gpu_and_have_a_heartbeat_liveness_probe(objects):
    for name in WORKER_QUEUES:
        (c,) = _containers(_by_kind(objects, "Deployment")[name])
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 == c["resources"]["requests"]["nvidia.com/gpu"]
        env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        assert env["GENVIEW_HEARTBEAT_FILE"].startswith("/tmp/")
        assert c["livenessProbe"]["exec"]["command"] == c["startupProbe"]["exec"]["command"]
        assert set(c["livenessProbe"]) & {"exec", "httpGet", "tcpSocket", "grpc"} == {"exec"}  # no port served


@pytest.mark.parametrize("age_s, healthy", [(1, True), (400, False), (None, False)])
def test_heartbeat_probe_fails_when_the_loop_stalls(objects, tmp_path, age_s, healthy):
    """Run the worker's liveness command as the kubelet would: fresh file → 0, stale or missing → non-zero."""
    (c,) = _containers(_by_kind(objects, "Deployment")["generator-worker"])
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    beat = tmp_path / "heartbeat"
    if age_s is not None:
        beat.touch()
        os.utime(beat, (time.time() - age_s,) * 2)
    command = [sys.executable if arg == "python" else arg for arg in c["livenessProbe"]["exec"]["command"]]
    probe_env = {**os.environ, "GENVIEW_HEARTBEAT_FILE": str(beat),
                 "GENVIEW_HEARTBEAT_MAX_AGE_S": env["GENVIEW_HEARTBEAT_MAX_AGE_S"]}
    rc = subprocess.run(command, env=probe_env, capture_output=True, timeout=30).returncode
    assert (rc == 0) is healthy


def test_apis_probe_healthz_and_readyz_and_services_select_their_pods(objects):
    pods = _pod_labels(objects)
    for name, svc in _by_kind(objects, "Service").items():
        (target,) = [p for p, labels in pods.items() if _selects({"matchLabels": svc["spec"]["selector"]}, labels)]
        ports = {p["name"] for c in _containers(_by_kind(objects, "Deployment" if name != "redis" else "StatefulSet")[target])
                 for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    for name in ("generator-api", "scorer-api"):
        (c,) = _containers(_by_kind(objects, "Deployment")[name])
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_redis_keeps_an_append_only_file_on_a_volume_claim(objects):
    redis = _by_kind(objects, "StatefulSet")["redis"]
    (c,) = _containers(redis)
    args = c["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    data_dir = args[args.index("--dir") + 1]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in c["volumeMounts"]


def test_s3_settings_come_from_a_secret_and_config_refs_exist(objects):
    config_maps = set(_by_kind(objects, "ConfigMap"))
    for obj in objects:
        for c in _containers(obj):
            refs = c.get("envFrom", [])
            assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= config_maps
            secrets = {r["secretRef"]["name"] for r in refs if "secretRef" in r}
            assert secrets <= EXTERNAL_SECRETS
            if obj["metadata"]["name"] != "redis":
                assert secrets == {"genview-s3"}
            assert {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", []) if "valueFrom" in e} \
                <= EXTERNAL_SECRETS
    assert not any("AWS" in key or "S3" in key or "STORE" in key
                   for cm in _by_kind(objects, "ConfigMap").values() for key in cm["data"])


def test_network_policies_leave_only_the_apis_reachable(objects):
    policies = list(_by_kind(objects, "NetworkPolicy").values())
    pods = _pod_labels(objects)
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")
               for p in policies), "no default deny"
    open_to_all = {name for name, labels in pods.items() for p in policies
                   if _selects(p["spec"]["podSelector"], labels)
                   and any("from" not in rule for rule in p["spec"].get("ingress", []))}
    assert open_to_all == set()
    for api in ("generator-api", "scorer-api"):  # only the ingress controller's and labelled namespaces
        peers = [peer for p in policies if _selects(p["spec"]["podSelector"], pods[api])
                 for rule in p["spec"].get("ingress", []) for peer in rule["from"]]
        assert peers and all(set(peer) == {"namespaceSelector"} for peer in peers), api
        assert [peer["namespaceSelector"]["matchLabels"] for peer in peers] == [
            {"kubernetes.io/metadata.name": "ingress-nginx"}, {"genview.io/api-client": "true"}], api
    redis_rules = [rule for p in policies if _selects(p["spec"]["podSelector"], pods["redis"])
                   for rule in p["spec"].get("ingress", [])]
    reach_redis = {name for name, labels in pods.items() for rule in redis_rules for peer in rule["from"]
                   if "podSelector" in peer and _selects(peer["podSelector"], labels)}
    assert reach_redis == {"generator-api", "scorer-api", "generator-worker", "scorer-worker"}
    assert any(peer.get("namespaceSelector") for rule in redis_rules for peer in rule["from"])  # KEDA's operator


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_ref(entry: dict) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_redis_requires_the_secret_password_and_every_client_carries_it(objects):
    (redis,) = _containers(_by_kind(objects, "StatefulSet")["redis"])
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert _secret_ref(_env(redis)["REDIS_PASSWORD"]) == _secret_ref(_env(redis)["REDISCLI_AUTH"]) == (
        "genview-redis", "password")
    assert redis["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]  # authenticated by REDISCLI_AUTH
    for name in ("generator-api", "scorer-api", *WORKER_QUEUES):
        (c,) = _containers(_by_kind(objects, "Deployment")[name])
        env, names = _env(c), [e["name"] for e in c["env"]]
        assert _secret_ref(env["REDIS_PASSWORD"]) == ("genview-redis", "password"), name
        assert env["GENVIEW_REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0", name
        assert names.index("REDIS_PASSWORD") < names.index("GENVIEW_REDIS_URL"), name  # $(VAR) needs it defined first
    assert not any("GENVIEW_REDIS_URL" in cm["data"] for cm in _by_kind(objects, "ConfigMap").values())
    (auth,) = _by_kind(objects, "TriggerAuthentication").values()
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "genview-redis", "key": "password"}]
    for so in _by_kind(objects, "ScaledObject").values():
        assert all(t["authenticationRef"]["name"] == auth["metadata"]["name"] for t in so["spec"]["triggers"])


def test_redis_started_with_the_rendered_args_refuses_clients_without_the_password(objects, tmp_path):
    from harness.ports import free_port, wait_for_port

    (redis,) = _containers(_by_kind(objects, "StatefulSet")["redis"])
    password, port = "a3f1c0ffee", free_port()
    args = [{"$(REDIS_PASSWORD)": password, "/data": str(tmp_path)}.get(a, a) for a in redis["args"][1:]]
    proc = subprocess.Popen(["redis-server", *args, "--port", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        (c,) = _containers(_by_kind(objects, "Deployment")["generator-worker"])
        url = _env(c)["GENVIEW_REDIS_URL"]["value"].replace("$(REDIS_PASSWORD)", password)
        queue = RedisJobQueue(url.replace("@redis:6379", f"@127.0.0.1:{port}"), GENERATE_QUEUE)
        queue.ping()
        queue.close()
        probe = lambda env: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,  # noqa: E731
                                           text=True, env={**os.environ, **env}, timeout=30).stdout
        assert probe({"REDISCLI_AUTH": password}).strip() == "PONG"
        assert "NOAUTH" in probe({})
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_apis_take_keys_from_a_secret_and_refuse_to_start_without_them(objects):
    config = _by_kind(objects, "ConfigMap")["genview-config"]["data"]
    assert "GENVIEW_API_KEYS" not in config and "GENVIEW_ALLOW_ANONYMOUS" not in config
    for name in ("generator-api", "scorer-api"):
        (c,) = _containers(_by_kind(objects, "Deployment")[name])
        assert _secret_ref(_env(c)["GENVIEW_API_KEYS"]) == ("genview-api-keys", "keys")
        plain = {k: e["value"] for k, e in _env(c).items() if "value" in e and "$(" not in e["value"]}
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GENVIEW_")}, **config, **plain,
               "GENVIEW_STORE_URL": "memory://k8s"}
        argv = [sys.executable, "-m", "services.cli", *c["args"][1:]]  # the secret is missing: no keys
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0, done.stderr
        (line,) = [ln for ln in done.stderr.splitlines() if ln.strip()][-1:]
        assert "refusing to serve without API keys on 0.0.0.0" in line and "GENVIEW_ALLOW_ANONYMOUS" in line
