"""Kubernetes manifests in deploy/k8s: parse, reference each other correctly, run the worker right.

No cluster and no kubectl here: the manifests are checked as data, plus (when the
``kubernetes-validate`` package is installed) against the Kubernetes OpenAPI
schemas it bundles, offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.static.support import K8S_DIR, load_yaml, load_yaml_documents

MANIFESTS = sorted(K8S_DIR.glob("*.yaml"))
OPTIONAL = {"secret.example.yaml", "servicemonitor.yaml"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}


def resources() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in MANIFESTS
        if path.name != "kustomization.yaml"
        for doc in load_yaml_documents(path)
    ]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in resources() if doc["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if isinstance(port, int):
        assert port in ports.values(), f"{container['name']}: port {port} is not a containerPort"
        return port
    assert port in ports, f"{container['name']}: no container port named {port!r}"
    return ports[port]


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in container.items() if k.endswith("Probe")}


def test_every_document_parses_and_has_the_required_fields() -> None:
    assert MANIFESTS, "deploy/k8s has manifests"
    for path in MANIFESTS:
        documents = load_yaml_documents(path)
        assert documents, f"{path.name} is empty"
        for doc in documents:
            for key in ("apiVersion", "kind"):
                assert doc.get(key), f"{path.name}: a document lacks {key}"
            if doc["kind"] != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{path.name}: {doc['kind']} lacks metadata.name"


def test_kustomization_lists_existing_files_and_leaves_the_optional_ones_out() -> None:
    kustomization = load_yaml(K8S_DIR / "kustomization.yaml")
    listed = kustomization["resources"]
    for name in listed:
        assert (K8S_DIR / name).is_file(), f"kustomization lists missing {name}"
    assert len(listed) == len(set(listed))
    expected = {p.name for p in MANIFESTS} - OPTIONAL - {"kustomization.yaml"}
    assert set(listed) == expected, (
        "every required manifest is in kustomization.yaml, the optional ones are not"
    )
    assert kustomization.get("namespace") == one("Namespace", "cxstream")["metadata"]["name"]


def test_worker_statefulset_keeps_rocksdb_state_on_a_volume_claim() -> None:
    sts = one("StatefulSet", "cxstream-worker")
    spec = sts["spec"]
    claims = {c["metadata"]["name"]: c for c in spec.get("volumeClaimTemplates", [])}
    assert claims, "the worker StatefulSet has volumeClaimTemplates"
    assert spec["replicas"] >= 2
    worker = next(c for c in containers(sts) if c["name"] == "worker")
    assert worker.get("args", [])[:1] == ["worker"] or worker.get("command", [])[-1:] == ["worker"]
    mounts = {m["name"]: m["mountPath"] for m in worker.get("volumeMounts", [])}
    config = one("ConfigMap", "cxstream-config")["data"]
    assert config["CXSTREAM_STORE"].startswith("rocksdb://")
    data_dir = config["CXSTREAM_DATA_DIR"]
    assert any(mounts.get(claim) == data_dir for claim in claims), (
        f"a volume claim is mounted at CXSTREAM_DATA_DIR={data_dir}: {mounts}"
    )
    for claim in claims.values():
        assert claim["spec"]["resources"]["requests"]["storage"]
        assert "ReadWriteOnce" in claim["spec"]["accessModes"]
    # Pod volumes referenced by mounts exist (claims or pod volumes).
    pod_volumes = {v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])}
    assert set(mounts) <= pod_volumes | set(claims)


def test_worker_is_scraped_and_probed_on_its_metrics_port() -> None:
    sts = one("StatefulSet", "cxstream-worker")
    template = sts["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    worker = next(c for c in containers(sts) if c["name"] == "worker")
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/path") == "/metrics"
    config = one("ConfigMap", "cxstream-config")["data"]
    web_port = int(config.get("CXSTREAM_WEB_PORT", "6066"))
    assert int(annotations["prometheus.io/port"]) == web_port
    assert resolve_port(worker, web_port) == web_port
    readiness = worker.get("readinessProbe", {}).get("httpGet")
    assert readiness, "the worker has an HTTP readiness probe"
    assert readiness["path"] == "/healthz"
    assert resolve_port(worker, readiness["port"]) == web_port


def test_every_http_probe_targets_a_declared_container_port() -> None:
    for _, doc in resources():
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for container in containers(doc):
            for kind, probe in probes(container).items():
                action = probe.get("httpGet") or probe.get("tcpSocket")
                assert action, f"{doc['metadata']['name']}/{container['name']} {kind}: httpGet or tcpSocket"
                resolve_port(container, action["port"])
                if "httpGet" in probe:
                    assert probe["httpGet"]["path"].startswith("/")


def test_all_cxstream_containers_use_one_pinned_image() -> None:
    images = {
        container["image"]
        for _, doc in resources()
        if doc["kind"] in WORKLOAD_KINDS
        for container in containers(doc)
    }
    assert len(images) == 1, f"one cxstream image everywhere, found {sorted(images)}"
    image = images.pop()
    name, _, tag = image.rpartition(":")
    assert tag and tag != "latest", image
    kustomize_images = {i["name"]: i for i in load_yaml(K8S_DIR / "kustomization.yaml").get("images", [])}
    assert name in kustomize_images, "kustomization.yaml pins the image"
    assert kustomize_images[name].get("newTag") == tag


def test_selectors_services_and_references_line_up() -> None:
    configmaps = {c["metadata"]["name"] for c in of_kind("ConfigMap")}
    secrets = {s["metadata"]["name"] for s in of_kind("Secret")}
    workloads = [doc for _, doc in resources() if doc["kind"] in WORKLOAD_KINDS]
    for workload in workloads:
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), f"{workload['metadata']['name']}: selector vs labels"
        for container in containers(workload):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configmaps
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, "secret.example.yaml shows the Secret"
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps
    for service in of_kind("Service"):
        selector = service["spec"]["selector"]
        matches = [
            w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matches, f"service {service['metadata']['name']} selects no workload"
        for port in service["spec"]["ports"]:
            for workload in matches:
                assert any(
                    _port_declared(c, port.get("targetPort", port["port"])) for c in containers(workload)
                ), f"service {service['metadata']['name']} targets an undeclared port"
    sts = one("StatefulSet", "cxstream-worker")
    headless = one("Service", sts["spec"]["serviceName"])
    assert headless["spec"].get("clusterIP") == "None", "the StatefulSet's service is headless"


def _port_declared(container: dict[str, Any], port: int | str) -> bool:
    return any(p["containerPort"] == port or p.get("name") == port for p in container.get("ports", []))


def test_alert_rules_configmap_has_the_placeholder_key() -> None:
    data = one("ConfigMap", "cxstream-alert-rules")["data"]
    assert "alert-rules.yml" in data
    yaml.safe_load(data["alert-rules.yml"])  # valid YAML, whatever the format becomes


def test_secret_example_holds_placeholders_only() -> None:
    secret = one("Secret", "cxstream-credentials")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert "CXSTREAM_REDIS_URL" in values
    for key, value in values.items():
        assert "CHANGE_ME" in value, f"{key} must be a CHANGE_ME placeholder, never a real credential"


def test_service_monitor_scrapes_the_worker_service() -> None:
    monitor = one("ServiceMonitor", "cxstream-worker")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one("Service", "cxstream-worker")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint.get("path", "/metrics") == "/metrics"
    # The alert rules match job=~"cxstream.*": the job label defaults to the Service name.
    assert "jobLabel" not in monitor["spec"] and service["metadata"]["name"].startswith("cxstream")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifests_match_the_kubernetes_schemas(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for doc in load_yaml_documents(path):
        if doc["apiVersion"].startswith(("kustomize.config.k8s.io", "monitoring.coreos.com")):
            continue  # custom resources: no bundled schema
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
