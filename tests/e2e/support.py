"""Run the wallboard for tests: in-process (aiohttp runner) or as ``python -m stream wallboard``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from stream.embedded import free_port
from stream.wallboard.server import BOARD_KEY, SafeAccessLogger, Wallboard, WallboardConfig, create_app

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningBoard:
    url: str
    app: web.Application

    @property
    def board(self) -> Wallboard:
        return self.app[BOARD_KEY]


@contextlib.asynccontextmanager
async def serve(config: WallboardConfig) -> AsyncIterator[RunningBoard]:
    """The wallboard app on 127.0.0.1 and a free port, inside the test's event loop."""
    app = create_app(config)
    runner = web.AppRunner(app, access_log_class=SafeAccessLogger, shutdown_timeout=2.0)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield RunningBoard(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()


@dataclass
class WallboardProcess:
    """``python -m stream wallboard`` as a child process, logging to a file."""

    env: Mapping[str, str]
    log_path: Path
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> WallboardProcess:
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stream",
                "wallboard",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wallboard exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"wallboard did not answer /healthz in {timeout}s:\n{self.log()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGINT (Ctrl-C), then SIGKILL if it does not exit; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        with contextlib.suppress(Exception):
            self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
