"""docker-compose.yml, Dockerfile and .dockerignore: valid and coherent, without a Docker engine.

The Compose file is validated against the Compose Specification JSON schema
(compose-spec/compose-spec, ``schema/compose-spec.json``) as vendored by the PyPI
package ``check-jsonschema`` (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``),
with the ``jsonschema`` package. ``docker compose config`` is run as well when the
Compose plugin is installed (it is not on the CI machine: the docker client there
has no ``compose`` command).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.static.support import COMPOSE_FILE, PROMETHEUS_DIR, ROOT, compose, load_yaml

CONTRACT_TOPICS = {"cx.interactions", "cx.surveys", "cx.deadletter"}


def compose_schema() -> dict[str, Any]:
    source = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return json.loads(source.read_text(encoding="utf-8"))


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    # The vendored schema names its draft as https://json-schema.org/draft-07/schema,
    # a spelling jsonschema's lookup does not know: pick the draft explicitly.
    meta = schema.get("$schema", "")
    if "draft-07" in meta:
        validator_cls: Any = jsonschema.Draft7Validator
    elif "2020-12" in meta:
        validator_cls = jsonschema.Draft202012Validator
    else:
        validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    return [
        f"{error.json_path}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: e.json_path)
    ]


def env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {k: "" if v is None else str(v) for k, v in raw.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def worker_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in doc["services"].items()
        if command(svc)[:1] == ["worker"] and str(svc.get("image", "")).startswith("cxstream")
    }


def cxstream_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc["services"].items() if str(s.get("image", "")).startswith("cxstream:")}


def volume_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, short or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, str):
            parts = entry.split(":")
            mounts.append((parts[0], parts[1]) if len(parts) > 1 else ("", parts[0]))
        else:
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
    return mounts


def published_ports(service: dict[str, Any]) -> list[str]:
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                ports.append(str(entry["published"]))
            continue
        parts = str(entry).split(":")
        if len(parts) >= 2:  # [ip:]host:container
            ports.append(parts[-2])
    return ports


def interpolation_default(value: str) -> str:
    """``${VAR:-default}`` -> default (what `docker compose` uses when VAR is unset)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


# --- the Compose specification --------------------------------------------------


def test_compose_file_matches_compose_spec_schema() -> None:
    errors = schema_errors(compose())
    assert not errors, "docker-compose.yml violates the Compose spec:\n" + "\n".join(errors)


@pytest.mark.parametrize(
    ("mutation", "path"),
    [
        (lambda d: d["services"]["redis"].update(helthcheck={"test": ["CMD", "true"]}), "helthcheck"),
        (lambda d: d["services"]["worker-1"]["depends_on"]["kafka"].update(condition="healthy"), "depends"),
        (lambda d: d["services"]["grafana"].update(ports="3000:3000"), "ports"),
    ],
    ids=["unknown-key", "bad-depends-condition", "ports-not-a-list"],
)
def test_schema_check_catches_mistakes(mutation: Any, path: str) -> None:
    """The schema really constrains the file: typical mistakes are reported."""
    broken = copy.deepcopy(compose())
    mutation(broken)
    errors = schema_errors(broken)
    assert errors, f"a broken compose file ({path}) passed the schema"


def test_docker_compose_config_when_available() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker client not installed; validated against the Compose JSON schema instead")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("docker compose plugin not installed; validated against the Compose JSON schema instead")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# --- semantics the schema cannot see ------------------------------------------------


def test_depends_on_targets_exist_and_conditions_can_be_met() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert dep != name, f"{name} depends on itself"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} healthy, but {dep} has none"
            if condition == "service_completed_successfully":
                restart = services[dep].get("restart", "no")
                assert restart in ("no", "on-failure"), f"one-shot {dep} must not restart ({restart})"


def test_no_dependency_cycles() -> None:
    services = compose()["services"]

    def deps(name: str) -> list[str]:
        raw = services[name].get("depends_on") or {}
        return list(raw)

    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        assert name not in visiting, f"depends_on cycle: {' -> '.join((*trail, name))}"
        if name in done:
            return
        visiting.add(name)
        for dep in deps(name):
            visit(dep, (*trail, name))
        visiting.discard(name)
        done.add(name)

    for service in services:
        visit(service, ())


def test_workers_form_one_consumer_group_with_rocksdb_state() -> None:
    doc = compose()
    workers = worker_services(doc)
    assert len(workers) >= 2, f"expected at least two worker services, found {sorted(workers)}"
    app_ids = {name: env(svc).get("CXSTREAM_APP_ID") for name, svc in workers.items()}
    assert None not in app_ids.values(), f"every worker sets CXSTREAM_APP_ID: {app_ids}"
    assert len(set(app_ids.values())) == 1, f"workers must share CXSTREAM_APP_ID: {app_ids}"
    data_volumes = []
    for name, svc in workers.items():
        variables = env(svc)
        assert variables.get("CXSTREAM_STORE", "").startswith("rocksdb://"), name
        assert variables.get("CXSTREAM_BROKER", "").startswith("kafka://"), name
        data_dir = variables.get("CXSTREAM_DATA_DIR")
        assert data_dir, f"{name} sets CXSTREAM_DATA_DIR"
        sources = [src for src, target in volume_mounts(svc) if target == data_dir]
        assert sources, f"{name}: no volume mounted at CXSTREAM_DATA_DIR={data_dir}"
        data_volumes.extend(sources)
        assert "healthcheck" in svc and "/healthz" in json.dumps(svc["healthcheck"]), name
    assert len(set(data_volumes)) == len(data_volumes), (
        f"workers must not share a state volume: {data_volumes}"
    )
    partitions = {interpolation_default(env(s).get("CXSTREAM_PARTITIONS", "")) for s in workers.values()}
    assert len(partitions) == 1, f"workers disagree on CXSTREAM_PARTITIONS: {partitions}"


def test_cxstream_roles_share_one_image() -> None:
    doc = compose()
    services = cxstream_services(doc)
    roles = {command(s)[0] for s in services.values()}
    assert {"worker", "generate", "wallboard"} <= roles, roles
    assert len({s["image"] for s in services.values()}) == 1, "one cxstream image for every role"
    assert any("build" in s for s in services.values()), "the cxstream image is built from the Dockerfile"
    generator = next(s for s in services.values() if command(s)[0] == "generate")
    assert command(generator) == ["generate", "--rate", "200", "--queues"]
    wallboard = next(s for s in services.values() if command(s)[0] == "wallboard")
    assert "8080" in published_ports(wallboard), "the wallboard is published on port 8080"


def test_third_party_images_are_pinned() -> None:
    for name, svc in compose()["services"].items():
        image = svc.get("image", "")
        assert image, f"{name} has no image"
        _, _, tag = image.rpartition(":")
        assert tag and "/" not in tag and tag != "latest", f"{name}: pin a tag, got {image!r}"


def test_published_host_ports_are_unique() -> None:
    seen: dict[str, str] = {}
    for name, svc in compose()["services"].items():
        for port in published_ports(svc):
            assert port not in seen, f"host port {port} published by {seen[port]} and {name}"
            seen[port] = name


def test_bind_mounts_exist_and_named_volumes_are_declared() -> None:
    doc = compose()
    declared = set(doc.get("volumes") or {})
    for name, svc in doc["services"].items():
        for source, target in volume_mounts(svc):
            if source.startswith((".", "/")):
                path = (COMPOSE_FILE.parent / source).resolve()
                assert path.exists(), f"{name}: bind mount source {source} does not exist"
                if source.startswith("./deploy"):
                    assert path.is_relative_to(ROOT / "deploy"), source
            elif source:
                assert source in declared, f"{name}: volume {source} is not declared at top level"
            assert target.startswith("/"), f"{name}: mount target {target} must be absolute"


def test_kafka_is_single_node_kraft_without_topic_auto_creation() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    variables = env(kafka)
    assert set(variables["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert variables["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "CONTROLLER" in variables["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert variables["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    for worker in worker_services(compose()).values():
        assert env(worker)["CXSTREAM_BROKER"] == "kafka://kafka:9092"
    # With auto-creation off, the one-shot init service creates every contract topic.
    init = json.dumps(services["kafka-init"]["command"])
    for topic in CONTRACT_TOPICS:
        assert topic in init, f"kafka-init does not create {topic}"


def test_prometheus_scrapes_every_worker_and_mounts_its_config() -> None:
    doc = compose()
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for sc in jobs["cxstream"]["static_configs"] for t in sc["targets"]}
    expected = {
        f"{name}:{env(svc).get('CXSTREAM_WEB_PORT', '6066')}" for name, svc in worker_services(doc).items()
    }
    assert targets == expected
    mounts = dict((t, s) for s, t in volume_mounts(doc["services"]["prometheus"]))
    assert mounts.get("/etc/prometheus") == "./deploy/prometheus"
    am_mounts = dict((t, s) for s, t in volume_mounts(doc["services"]["alertmanager"]))
    assert am_mounts.get("/etc/alertmanager") == "./deploy/alertmanager"
    am_targets = {
        t for am in config["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    }
    assert am_targets == {"alertmanager:9093"}


def test_grafana_mounts_provisioning_and_dashboards() -> None:
    doc = compose()
    mounts = {t: s for s, t in volume_mounts(doc["services"]["grafana"])}
    assert mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning"
    provider = load_yaml(ROOT / "deploy/grafana/provisioning/dashboards/cxstream.yml")
    dashboard_path = provider["providers"][0]["options"]["path"]
    assert mounts.get(dashboard_path) == "./deploy/grafana/dashboards", (
        "the dashboard provider path must be where docker-compose mounts deploy/grafana/dashboards"
    )


def test_grafana_escapes_quotes_in_variable_values() -> None:
    """A queue named with a double quote breaks every ``queue=~"$queue"`` panel unless Grafana's
    prometheusSpecialCharsInLabelValues toggle is on (shown on a real Prometheus by
    tests/integration/test_prometheus_stack.py; docs/prometheus.md)."""
    grafana = compose()["services"]["grafana"]
    toggles = str(grafana["environment"].get("GF_FEATURE_TOGGLES_ENABLE", "")).split(",")
    assert "prometheusSpecialCharsInLabelValues" in [t.strip() for t in toggles]
    major = int(grafana["image"].rsplit(":", 1)[1].split(".")[0])
    assert major >= 12, "the toggle needs a recent Grafana"


# --- Dockerfile -----------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_builds_a_non_root_cxstream_image() -> None:
    instructions = dockerfile_instructions()
    froms = [rest for kw, rest in instructions if kw == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms), froms
    final_stage = instructions[max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM") :]
    users = [rest for kw, rest in final_stage if kw == "USER"]
    assert users, "the runtime stage sets USER"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    exposed = {p for kw, rest in final_stage if kw == "EXPOSE" for p in rest.split()}
    assert "6066" in exposed
    entrypoint = [rest for kw, rest in final_stage if kw == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["cxstream"]
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert re.search(r"pip (wheel|install)\b.*'\.\[rocksdb\]'", runs), "installs '.[rocksdb]'"


def test_dockerignore_keeps_the_build_context_small_but_complete() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".git", ".venv"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    for kept in ("stream", "pyproject.toml", "README.md"):
        assert not any(Path(kept).match(p) or p.rstrip("/") == kept for p in patterns), (
            f".dockerignore must not exclude {kept}: the image build needs it"
        )
