"""`cxstream demo` (what `make demo` runs): KPIs appear and move within 30 s, and it stops cleanly.

The demo starts its own tansu broker, Redis, worker, wallboard and generator, so this
test is the README's promise end to end: a newcomer sees a per-queue table with
contacts counted, numbers growing from one refresh to the next, and nothing left
running afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from stream.embedded import free_port

pytestmark = pytest.mark.integration

#: The all-queues row: waiting, longest wait, service level, abandon, then contacts and ended.
ALL_ROW = re.compile(r"^\s+ALL\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)", re.MULTILINE)
ACCEPTED = re.compile(r"^events: accepted (\d+),", re.MULTILINE)


def test_demo_shows_moving_kpis_within_30_seconds_and_stops_cleanly(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
    env["CXSTREAM_DATA_DIR"] = str(tmp_path / "data")
    started = time.monotonic()
    demo = subprocess.Popen(
        [sys.executable, "-m", "stream", "demo", "--duration", "40", "--web-port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert demo.stdout is not None
    seen_at: list[float] = []
    contacts: list[int] = []
    service_levels: list[str] = []
    lines: list[str] = []
    scraped = b""
    for line in demo.stdout:
        lines.append(line)
        match = ALL_ROW.match(line)
        if match:
            seen_at.append(time.monotonic() - started)
            contacts.append(int(match.group(5)))
            service_levels.append(match.group(3))
            if len(contacts) == 2:
                scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    rc = demo.wait(timeout=60)
    output = "".join(lines)
    assert rc == 0, output[-3000:]
    assert contacts, f"no KPI table with an ALL row:\n{output[-3000:]}"
    assert seen_at[0] < 30, f"first KPIs after {seen_at[0]:.0f} s"
    assert contacts[-1] > contacts[0] > 0, contacts  # moving, not a frozen table
    assert any(level.endswith("%") for level in service_levels), service_levels  # the queue leads
    assert b"cx_contacts{" in scraped and b"cx_events_total" in scraped
    accepted = [int(n) for n in ACCEPTED.findall(output)]
    assert accepted and accepted[-1] > 0
    assert "stopped." in output
    assert "Traceback" not in output, output[-3000:]
    with pytest.raises(OSError):  # the worker's web server is gone with the demo
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
