"""Kubernetes manifests: parse, validate structurally, and hang together (selectors,
ports, HPA target, config names, secrets), plus the kustomize build of base and GPU."""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.k8s_schema import NAMESPACED, validate_object
from tests.deploy.support import (
    K8S,
    config_problems,
    container_env,
    k8s_documents,
    k8s_files,
    pod_spec,
    section_models,
    sentri_commands,
)

WORKLOAD_KINDS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return [doc for _, doc in k8s_documents()]


@pytest.fixture(scope="module")
def models():
    return section_models()


def _by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _workloads(docs) -> list[dict]:
    return [d for d in docs if d["kind"] in WORKLOAD_KINDS]


def _configmaps(docs) -> dict[str, dict[str, str]]:
    return {
        n: {k: str(v) for k, v in (d.get("data") or {}).items()}
        for n, d in _by_kind(docs, "ConfigMap").items()
    }


def _kustomize(path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it renders kustomizations offline)")
    res = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def test_every_document_is_a_valid_object_in_the_sentri_namespace() -> None:
    seen = set()
    count = 0
    for path, doc in k8s_documents():
        count += 1
        where = f"{path.relative_to(K8S)}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        problems = validate_object(doc)
        assert not problems, f"{where}:\n" + "\n".join(problems)
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"].get("namespace") == "sentri", where
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
    assert count >= 15


def test_the_structural_check_catches_mistakes(docs) -> None:
    detector = copy.deepcopy(_by_kind(docs, "Deployment")["detector"])
    container = detector["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["containerport"] = container["ports"][0].pop("containerPort")
    container["readinessprobe"] = container.pop("readinessProbe")
    container["resources"]["limits"]["cpu"] = ["2"]
    problems = "\n".join(validate_object(detector))
    assert "containerport: unknown field" in problems
    assert "containerPort: required" in problems
    assert "readinessprobe: unknown field" in problems
    assert "limits.cpu" in problems
    assert validate_object(
        {"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "x"}}
    )


def test_kustomizations_list_every_manifest() -> None:
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert sorted(base["resources"]) == sorted(p.name for p in k8s_files())
    assert base["namespace"] == "sentri"
    root = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert root["resources"] == ["base"]
    gpu = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert gpu["resources"] == ["../base"]
    for patch in gpu["patches"]:
        if "path" in patch:
            assert (K8S / "gpu" / patch["path"]).exists()


def test_selectors_match_their_pod_template_labels(docs) -> None:
    for wl in _workloads(docs):
        selector = wl["spec"]["selector"]["matchLabels"]
        labels = wl["spec"]["template"]["metadata"]["labels"]
        assert selector and selector.items() <= labels.items(), wl["metadata"]["name"]


def test_services_select_pods_and_target_their_container_ports(docs) -> None:
    workloads = _workloads(docs)
    for name, svc in _by_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        targets = [
            wl
            for wl in workloads
            if selector.items() <= wl["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(targets) == 1, f"Service {name} selects {len(targets)} workloads"
        ports = [p for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])]
        names = {p.get("name") for p in ports}
        numbers = {p["containerPort"] for p in ports}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in (names if isinstance(target, str) else numbers), (
                f"Service {name}: targetPort {target!r} is not a container port of "
                f"{targets[0]['metadata']['name']} ({sorted(numbers)}, {sorted(n for n in names if n)})"
            )
    statefulset = _by_kind(docs, "StatefulSet")["redis"]
    assert statefulset["spec"]["serviceName"] in _by_kind(docs, "Service")


def test_ingress_routes_to_the_gateway_http_port(docs) -> None:
    ingress = _by_kind(docs, "Ingress")["gateway"]
    services = _by_kind(docs, "Service")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            svc = services[backend["name"]]
            port_names = {p.get("name") for p in svc["spec"]["ports"]}
            port_numbers = {p["port"] for p in svc["spec"]["ports"]}
            port = backend["port"]
            assert port.get("name") in port_names or port.get("number") in port_numbers
    assert ingress["spec"]["tls"], "the dashboard is served over HTTPS"


def test_agents_reach_ingest_frames_and_control_from_outside(docs) -> None:
    services = _by_kind(docs, "Service")
    agents = services["ingest-agents"]
    assert agents["spec"]["type"] in ("LoadBalancer", "NodePort")
    assert sorted(p["port"] for p in agents["spec"]["ports"]) == [5555, 5556]
    external = {
        n for n, s in services.items() if s["spec"].get("type") in ("LoadBalancer", "NodePort")
    }
    assert external == {"ingest-agents"}, (
        "only the agent ports leave the cluster (gateway via Ingress)"
    )
    assert services["redis"]["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in services["ingest"]["spec"]["ports"]] == [5557]


def test_hpa_scales_the_detector_deployment_on_cpu(docs) -> None:
    hpa = _by_kind(docs, "HorizontalPodAutoscaler")["detector"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "detector")
    assert ref["name"] in _by_kind(docs, "Deployment")
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"].get("minReplicas", 1) < hpa["spec"]["maxReplicas"]
    # utilisation is relative to requests: without a CPU request the HPA cannot work
    detector = _by_kind(docs, "Deployment")["detector"]
    for c in pod_spec(detector)["containers"]:
        assert "cpu" in c["resources"]["requests"], c["name"]


def test_containers_run_real_sentri_commands(docs) -> None:
    commands = sentri_commands()
    services = set()
    for wl in _workloads(docs):
        for c in pod_spec(wl)["containers"]:
            if c["image"].split(":")[0] != "sentri":
                continue
            assert c.get("args") and "command" not in c, f"{c['name']}: use the image entrypoint"
            assert c["args"][0] in commands, f"{c['name']}: `sentri {c['args'][0]}` does not exist"
            services.add(c["args"][0])
    assert services == {
        "ingest", "detector", "faces", "analyst", "recorder", "archiver", "notifier", "gateway"
    }  # fmt: skip


def test_sentri_env_names_and_values_match_the_config_models(docs, models) -> None:
    configmaps = _configmaps(docs)
    problems = config_problems(configmaps["sentri-config"], models, "configmap sentri-config")
    for wl in _workloads(docs):
        for c in pod_spec(wl)["containers"]:
            for src in c.get("envFrom") or []:
                assert src["configMapRef"]["name"] in configmaps
            problems += config_problems(
                container_env(c, configmaps), models, f"{wl['metadata']['name']}/{c['name']}"
            )
    assert not problems, "\n".join(problems)


def test_pods_run_as_non_root_with_probes_and_limits(docs) -> None:
    for wl in _workloads(docs):
        spec = pod_spec(wl)
        name = wl["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
            assert "readinessProbe" in c and "livenessProbe" in c, name
            assert "memory" in c["resources"]["limits"], name


def test_secrets_are_referenced_never_committed(docs) -> None:
    assert not _by_kind(docs, "Secret"), "secrets are created by the operator, not committed"
    redis = _by_kind(docs, "StatefulSet")["redis"]
    container = pod_spec(redis)["containers"][0]
    auth = {e["name"]: e for e in container["env"]}["REDISCLI_AUTH"]
    assert auth["valueFrom"]["secretKeyRef"] == {"name": "sentri-redis", "key": "password"}
    assert "requirepass" in container["args"][0] and "--appendonly yes" in container["args"][0]
    assert any(m["mountPath"] == "/data" for m in container["volumeMounts"])
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    for wl in _workloads(docs):
        for c in pod_spec(wl)["containers"]:
            for e in c.get("env") or []:
                names_a_secret = any(
                    w in e["name"] for w in ("PASSWORD", "API_KEY", "TOKEN", "SECRET")
                )
                if names_a_secret and not e["name"].endswith(("_FILE", "_ENV")):
                    assert "valueFrom" in e, f"{c['name']}: {e['name']} must come from a Secret"
            env = {e["name"]: e for e in c.get("env") or []}
            if c["image"].startswith("sentri:"):
                assert env["REDIS_URL"]["value"] == "redis://:$(REDIS_PASSWORD)@redis:6379/0"
                names = [e["name"] for e in c["env"]]
                assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), (
                    "$(VAR) needs order"
                )


def test_volumes_and_claims_exist(docs) -> None:
    claims = set(_by_kind(docs, "PersistentVolumeClaim"))
    for wl in _workloads(docs):
        spec = pod_spec(wl)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        templates = {t["metadata"]["name"] for t in wl["spec"].get("volumeClaimTemplates") or []}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims
        for c in spec["containers"]:
            for m in c.get("volumeMounts") or []:
                assert m["name"] in volumes or m["name"] in templates, f"{c['name']}: {m['name']}"


def test_kustomize_renders_base() -> None:
    rendered = _kustomize(K8S)
    kinds = sorted({d["kind"] for d in rendered})
    assert "HorizontalPodAutoscaler" in kinds and "StatefulSet" in kinds
    for doc in rendered:
        assert not validate_object(doc), doc["metadata"]["name"]
        if doc["kind"] in NAMESPACED:
            assert doc["metadata"]["namespace"] == "sentri"


def test_kustomize_gpu_overlay_puts_the_detector_on_a_gpu(models) -> None:
    rendered = _kustomize(K8S / "gpu")
    problems = [p for doc in rendered for p in validate_object(doc)]
    assert not problems, "\n".join(problems)
    deployments = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Deployment"}
    detector = pod_spec(deployments["detector"])
    container = detector["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].startswith("sentri-gpu:")
    configmaps = _configmaps(rendered)
    env = container_env(container, configmaps)
    assert env["SENTRI_DETECTOR__DEVICE"] == "cuda"
    assert not config_problems(env, models, "gpu detector")
    # the rest of the detector (redis secret, probes, security) survived the patch
    assert "REDIS_URL" in env and "readinessProbe" in container
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert not [d for d in rendered if d["kind"] == "HorizontalPodAutoscaler"]
    # the other workers keep the CPU image
    for name in ("faces", "analyst", "ingest", "gateway"):
        assert pod_spec(deployments[name])["containers"][0]["image"] == "sentri:latest"


def test_ingest_requires_curve_with_its_key_pair_on_the_pvc(docs) -> None:
    ingest = _by_kind(docs, "Deployment")["ingest"]
    spec = pod_spec(ingest)
    [container] = spec["containers"]
    env = container_env(container, _configmaps(docs))
    assert env.get("SENTRI_INGEST__INSECURE", "false").lower() == "false"
    assert "--insecure" not in container["args"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    # <state_dir>/keys holds the server key pair: on the PVC, so it survives restarts
    state = volumes[mounts[env["SENTRI_GENERAL__STATE_DIR"]]["name"]]
    assert state["persistentVolumeClaim"]["claimName"] in _by_kind(docs, "PersistentVolumeClaim")
    # provisioned agent keys: an optional Secret, mounted read-only where
    # ingest.authorized_keys points (a directory of *.public files)
    keys_mount = mounts[env["SENTRI_INGEST__AUTHORIZED_KEYS"]]
    assert keys_mount["readOnly"] is True
    secret = volumes[keys_mount["name"]]["secret"]
    assert secret["optional"] is True and secret["secretName"] == "sentri-agent-keys"


def test_storage_users_share_one_claim_at_one_path(docs) -> None:
    from shared.config import load_section
    from shared.storage.config import StorageConfig

    configmaps = _configmaps(docs)
    deployments = _by_kind(docs, "Deployment")
    claim = _by_kind(docs, "PersistentVolumeClaim")["sentri-storage"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    seen = set()
    for name in ("detector", "faces", "recorder", "archiver", "gateway"):
        spec = pod_spec(deployments[name])
        c = next(c for c in spec["containers"] if c["name"] == name)
        env = container_env(c, configmaps)
        cfg = load_section(StorageConfig, "storage", env=env)
        state_dir = env.get("SENTRI_GENERAL__STATE_DIR", "/var/lib/sentri")
        media, db = str(cfg.media_root(state_dir)), cfg.db_url(state_dir)
        assert db.startswith("sqlite:////"), (name, db)
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes") or []
            if "persistentVolumeClaim" in v
        }
        for path in (media, db[len("sqlite:///") :]):
            mounts = [
                m for m in c.get("volumeMounts") or []
                if path.startswith(m["mountPath"].rstrip("/") + "/")
            ]  # fmt: skip
            assert mounts, f"{name}: {path} is not on a volume"
            m = max(mounts, key=lambda m: len(m["mountPath"]))
            assert claims.get(m["name"]) == "sentri-storage" and not m.get("readOnly"), name
            seen.add((path, m["mountPath"]))
    assert len(seen) == 2, seen  # one media dir, one database file, one mount path
    # the notifier has nothing to do with media or the event store
    assert not pod_spec(deployments["notifier"]).get("volumes")
