"""The embedded servers as managed child processes: start, probe, pause, restart, stop.

See the package docstring for why they exist and how leaks are prevented.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self
from urllib.parse import quote

from stream.embedded.binaries import (
    KEEP_LOGS_ENV,
    LOCALHOST,
    EmbeddedError,
    find_redis_binary,
    find_tansu_binary,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on *host* that nothing listens on right now.

    The kernel picks it (bind to port 0), so parallel test runs do not collide on a
    fixed port. Another process could still take it before our child binds it;
    ``ManagedServer.start`` re-checks and retries with a new port in that case.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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


_atexit_registered = False


def _register_cleanup() -> None:
    """Install the atexit hook once, when the first child starts (not at import)."""
    global _atexit_registered
    with _registry_lock:
        if not _atexit_registered:
            atexit.register(_kill_all_children)
            _atexit_registered = True


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
        _register_cleanup()
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
        return _run_async(_kafka_answers(self.bootstrap), timeout=5.0)

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
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.retry import Retry

        client = redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        except (RedisError, OSError):
            return False
        finally:
            client.close()


async def _kafka_answers(bootstrap: str) -> bool:
    """Does a Kafka client get metadata from ``bootstrap``? (aiokafka's own bootstrap.)"""
    from aiokafka import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=2000, metadata_max_age_ms=60_000)
    try:
        await client.bootstrap()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        await client.close()


def _run_async(probe: Coroutine[Any, Any, bool], timeout: float) -> bool:
    """Run an async probe to completion from sync code, also when an event loop is running."""
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(probe)), daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
