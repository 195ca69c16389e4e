"""A real Prometheus and Alertmanager (Debian's packages) with the shipped configs, and a webhook.

The configs are the shipped ``deploy/prometheus/prometheus.yml`` and
``deploy/alertmanager/alertmanager.yml`` with only what must differ in a test swapped:
scrape targets, intervals (1 s instead of 15 s; Alertmanager's group waits), the
Alertmanager address and the receivers' URLs. The rule files are the shipped ones, by
absolute path, unmodified. :func:`prometheus_config` and :func:`alertmanager_config`
return the swapped keys too, so a test can assert that nothing else changed.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from stream.embedded import free_port

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTMANAGER_FILE = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
INTERVAL = "1s"


def binary(*names: str) -> str | None:
    """The first of ``names`` on PATH (Debian installs ``prometheus-alertmanager``)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def prometheus_config(workers: list[str], alertmanager: str) -> tuple[dict[str, Any], set[str]]:
    """The shipped prometheus.yml for a test: (config, the dotted keys that were swapped)."""
    shipped = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config = copy.deepcopy(shipped)
    swapped = {"global.scrape_interval", "global.scrape_timeout", "global.evaluation_interval", "rule_files"}
    config["global"].update(scrape_interval=INTERVAL, scrape_timeout=INTERVAL, evaluation_interval=INTERVAL)
    config["rule_files"] = [str((PROMETHEUS_DIR / f).resolve()) for f in shipped["rule_files"]]
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    swapped.add("alerting.alertmanagers.0.static_configs.0.targets")
    for i, job in enumerate(config["scrape_configs"]):
        targets = {"cxstream": workers, "alertmanager": [alertmanager]}.get(job["job_name"])
        if targets is not None:
            job["static_configs"][0]["targets"] = targets
            swapped.add(f"scrape_configs.{i}.static_configs.0.targets")
    return config, swapped


def alertmanager_config(webhook_url: str) -> tuple[dict[str, Any], set[str]]:
    """The shipped alertmanager.yml for a test: every webhook to ``webhook_url``, 1 s group waits."""
    config = copy.deepcopy(yaml.safe_load(ALERTMANAGER_FILE.read_text()))
    swapped = {"route.group_wait", "route.group_interval"}
    config["route"].update(group_wait=INTERVAL, group_interval=INTERVAL)
    for i, receiver in enumerate(config["receivers"]):
        for k, hook in enumerate(receiver.get("webhook_configs", [])):
            hook["url"] = webhook_url
            swapped.add(f"receivers.{i}.webhook_configs.{k}.url")
    return config, swapped


def differences(a: Any, b: Any, path: str = "") -> set[str]:
    """Dotted keys where two YAML documents differ (for the "only swapped" assertion); a list
    of plain values (targets, rule files) is one key."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for key in set(a) | set(b):
            out |= differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    if (
        isinstance(a, list)
        and isinstance(b, list)
        and len(a) == len(b)
        and any(isinstance(x, dict) for x in a)
    ):
        out = set()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            out |= differences(x, y, f"{path}.{i}" if path else str(i))
        return out
    return set() if a == b else {path}


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class _Server:
    """A child process with its own port, log file and data directory."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _launch(self, executable: str, config: dict[str, Any], *flags: str) -> None:
        """Write ``config`` beside the data and run ``executable`` on it until ``/-/ready``."""
        path = self.directory / f"{Path(executable).name}.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._spawn(
            [
                executable,
                f"--config.file={path}",
                f"--web.listen-address={self.address}",
                "--log.level=warn",
                *flags,
            ],
            "/-/ready",
        )

    def _spawn(self, argv: list[str], ready_path: str, timeout: float = 30.0) -> None:
        self._log = open(self.directory / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{argv[0]} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(
                (self.directory / "server.log").read_text(errors="replace").splitlines()[-lines:]
            )
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class PrometheusServer(_Server):
    """Debian's ``prometheus`` with :func:`prometheus_config`."""

    def start(self, config: dict[str, Any], executable: str) -> PrometheusServer:
        self._launch(executable, config, f"--storage.tsdb.path={self.directory / 'data'}")
        return self

    def targets_up(self, job: str) -> int:
        active = _get_json(self.url + "/api/v1/targets")["data"]["activeTargets"]
        return sum(t["labels"].get("job") == job and t["health"] == "up" for t in active)


@dataclass
class AlertmanagerServer(_Server):
    """Debian's ``prometheus-alertmanager`` with :func:`alertmanager_config`, clustering off."""

    def start(self, config: dict[str, Any], executable: str) -> AlertmanagerServer:
        self._launch(
            executable, config, f"--storage.path={self.directory / 'data'}", "--cluster.listen-address="
        )
        return self

    def alerts(self) -> list[dict[str, Any]]:
        return list(_get_json(self.url + "/api/v2/alerts"))


class WebhookReceiver:
    """An HTTP server that keeps every JSON body POSTed to it (Alertmanager's webhook)."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/cxstream"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def notifications(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def missing_binaries() -> str | None:
    """Why the stack cannot start here, or None (CI must have both: make system-deps)."""
    if binary("prometheus") is None:
        return "prometheus not found: install Debian's 'prometheus' package (make system-deps)"
    if binary("prometheus-alertmanager", "alertmanager") is None:
        return "alertmanager not found: install Debian's 'prometheus-alertmanager' package (make system-deps)"
    return None
