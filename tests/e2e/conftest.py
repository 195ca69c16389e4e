"""End-to-end fixtures: a real Redis, Debian's Chromium, and where screenshots go."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.embedded import RedisServer
from tests.e2e.cdp import CHROMIUM_ENV, find_chromium
from tests.harness import tool_missing

REPO = Path(__file__).resolve().parents[2]
#: Git-ignored; CI keeps it as the test artifact.
ARTIFACTS = REPO / "test-artifacts"
#: Set to 1 to refresh docs/images/*.png (the README screenshot) from this run.
UPDATE_SCREENSHOTS_ENV = "CXSTREAM_UPDATE_SCREENSHOTS"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the Chromium binary; missing fails under CI (``CI`` set) and skips elsewhere."""
    path = find_chromium()
    if path is None:
        tool_missing(
            "Chromium not found: install Debian's package (`make system-deps`, or "
            f"`apt-get install chromium`) or set {CHROMIUM_ENV}=/path/to/chromium"
        )
    return path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own (the test stops and restarts it)."""
    server = RedisServer(log_dir=tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def update_docs_screenshots() -> bool:
    return os.environ.get(UPDATE_SCREENSHOTS_ENV, "") not in ("", "0")
