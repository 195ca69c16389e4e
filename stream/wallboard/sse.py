"""Server-sent events: a latest-value hub and the wire format.

Every browser gets the newest state, never a backlog: the hub keeps one current
version, and a slow client that misses versions simply sends the newest one next.
Payloads are rendered once per version and window and shared by all clients.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from stream.wallboard.aggregate import select_window


def format_event(data: bytes, event: str | None = None, event_id: int | None = None) -> bytes:
    """One SSE message. ``data`` must be one line (compact JSON is)."""
    head = b""
    if event:
        head += b"event: " + event.encode() + b"\n"
    if event_id is not None:
        head += b"id: " + str(event_id).encode() + b"\n"
    return head + b"data: " + data.replace(b"\n", b"\\n") + b"\n\n"


def format_retry(milliseconds: int) -> bytes:
    """Tell the browser how long to wait before reconnecting."""
    return b"retry: " + str(int(milliseconds)).encode() + b"\n\n"


COMMENT_PING = b": ping\n\n"


class StateHub:
    """Holds the latest state; lets any number of SSE clients wait for the next one."""

    def __init__(self) -> None:
        self.version = 0
        self.state: dict[str, Any] | None = None
        self._changed = asyncio.Event()
        self._rendered: dict[str | None, bytes] = {}
        self.clients = 0
        self.closed = False

    def publish(self, state: dict[str, Any]) -> None:
        """Make ``state`` current and wake every waiting client."""
        self.state = state
        self.version += 1
        self._rendered = {}
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def close(self) -> None:
        """Wake every client for the last time: the server is shutting down."""
        self.closed = True
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait(self, seen_version: int, timeout: float) -> bool:
        """Wait until a version newer than ``seen_version`` exists; False on timeout."""
        if self.version != seen_version or self.closed:
            return True
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def render(self, window: str | None, dumps: Callable[[Any], bytes] = orjson.dumps) -> bytes:
        """The current state for one window as compact JSON (cached per version)."""
        cached = self._rendered.get(window)
        if cached is None:
            state = self.state or {}
            cached = self._rendered[window] = dumps(select_window(state, window) if state else {})
        return cached
