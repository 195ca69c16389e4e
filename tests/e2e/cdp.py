"""Drive headless Chromium over the DevTools protocol, with nothing but aiohttp.

No Selenium, no chromedriver, no Playwright download: Debian's ``chromium`` package is
started with ``--remote-debugging-port=0``; it writes the port it picked into
``DevToolsActivePort`` in its (fresh, temporary) profile directory, and we talk to the
browser target's WebSocket. One page target is created and attached with
``flatten=True`` so every command is just ``{"id", "method", "params", "sessionId"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import aiohttp
import orjson

CHROMIUM_ENV = "CXSTREAM_CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

#: The flags the issue asks for, plus what keeps a headless run quiet and reproducible.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--force-color-profile=srgb",
    "--window-size=1920,1080",
)


class CDPError(RuntimeError):
    """A DevTools command failed, or the browser went away."""


def find_chromium() -> str | None:
    """``$CXSTREAM_CHROMIUM``, else the first Chromium-like browser on PATH."""
    override = os.environ.get(CHROMIUM_ENV, "").strip()
    if override:
        return shutil.which(override) or (override if os.access(override, os.X_OK) else None)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium process with a throw-away profile, and one page in it."""

    def __init__(self, binary: str, log_path: Path) -> None:
        self.binary = binary
        self.log_path = log_path
        self.profile = Path(tempfile.mkdtemp(prefix="cxstream-chromium-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.session_id: str | None = None
        self.events: list[dict[str, Any]] = []

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self, timeout: float = 30.0) -> Browser:
        """Launch Chromium and attach to a fresh page; on any failure nothing is left running."""
        try:
            return await self._start(timeout)
        except BaseException:
            await self.close()
            raise

    async def _start(self, timeout: float) -> Browser:
        argv = [
            self.binary,
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}:\n{self.log_tail()}")
            if port_file.exists():
                lines = port_file.read_text().split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                    port, path = int(lines[0]), lines[1].strip()
                    break
            if time.monotonic() > deadline:
                raise CDPError(f"chromium did not open its DevTools port in {timeout}s:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        self._reader = asyncio.create_task(self._read_loop())
        target = await self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, session=False
        )
        self.session_id = attached["sessionId"]
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1920, "height": 1080, "deviceScaleFactor": 1, "mobile": False},
        )
        return self

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._http is not None:
            await self._http.close()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- protocol ------------------------------------------------------------------------------
    async def _read_loop(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = orjson.loads(message.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None:
                if not future.done():
                    if "error" in data:
                        future.set_exception(CDPError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
            elif "method" in data:
                self.events.append(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("browser connection closed"))

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = True,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        assert self._ws is not None
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = future
        await self._ws.send_str(orjson.dumps(message).decode())
        result: dict[str, Any] = await asyncio.wait_for(future, timeout)
        return result

    # -- page helpers --------------------------------------------------------------------------
    async def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Open ``url`` and return once that document has loaded (Page.navigate returns earlier)."""
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        expression = "[location.href, document.readyState]"
        await self.wait_for(expression, lambda v: v == [url, "complete"], timeout=timeout)

    async def evaluate(self, expression: str) -> Any:
        """Evaluate JS in the page and return the value (JSON-serialisable values only)."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CDPError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(
        self, expression: str, predicate: Callable[[Any], bool] = bool, timeout: float = 15.0
    ) -> Any:
        """Poll ``expression`` until ``predicate(value)``; raise with the last value on timeout."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            try:
                value = await self.evaluate(expression)
            except CDPError as exc:  # e.g. the document is being replaced: try again
                value = exc
            else:
                if predicate(value):
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {expression!r}; last value {value!r}"
                )
            await asyncio.sleep(0.1)

    async def screenshot(self, path: Path) -> bytes:
        result = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
        data = base64.b64decode(result["data"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return data

    def page_errors(self) -> list[str]:
        """Uncaught exceptions and console errors the page produced so far."""
        errors = []
        for event in self.events:
            if event.get("method") == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                errors.append(str(details.get("exception", {}).get("description") or details.get("text")))
            elif event.get("method") == "Runtime.consoleAPICalled" and event["params"].get("type") == "error":
                errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in event["params"]["args"])
                )
        return errors
