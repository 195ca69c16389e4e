"""Kafka and Redis security settings turned into client arguments, and kept out of logs.

One place maps the ``CXSTREAM_KAFKA_*`` security settings to what each Kafka client
needs, so the worker (Faust), the topic check (aiokafka admin), the traffic generator
and the demo all authenticate the same way:

* :func:`kafka_client_kwargs` -- keyword arguments for aiokafka clients
  (``AIOKafkaProducer``, ``AIOKafkaConsumer``, ``AIOKafkaAdminClient``);
* :func:`faust_broker_credentials` -- Faust's ``broker_credentials`` setting.

Redis security needs no code here: ``CXSTREAM_REDIS_URL`` carries it
(``redis://:password@host:6379/0``, ``rediss://user:password@host:6380/0`` for TLS,
``?ssl_ca_certs=/path/ca.pem`` for a private CA), and redis-py reads it from the URL.

Secrets (the SASL password, the Redis URL's password, the wallboard token) are
``SecretStr`` in settings, so they print as ``**********``. As a second line of
defence :func:`install_log_redaction` masks their values in every log record, so a
library that logs its configuration or an exception that quotes a URL cannot leak
them either. See docs/security.md.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

from stream.config.settings import Settings, SettingsError

log = logging.getLogger(__name__)

SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
MASK = "***"
#: Secrets shorter than this are not redacted from logs: masking "a" everywhere would
#: garble every line and protects nothing (a one-character password is no secret).
MIN_REDACTED_LENGTH = 4


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for ``SSL``/``SASL_SSL`` (None for plaintext protocols).

    The CA file defaults to the system trust store; a client certificate (mTLS) is
    loaded when ``CXSTREAM_KAFKA_SSL_CERTFILE`` is set (its key from the same file or
    ``CXSTREAM_KAFKA_SSL_KEYFILE``). Host names are always verified.
    """
    if settings.kafka_security_protocol not in SSL_PROTOCOLS:
        return None
    from aiokafka.helpers import create_ssl_context

    if settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        raise SettingsError(
            "invalid configuration:\n  CXSTREAM_KAFKA_SSL_KEYFILE is set but CXSTREAM_KAFKA_SSL_CERTFILE "
            "is not; a client key needs its certificate"
        )
    for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"):
        path = getattr(settings, name)
        if path is not None and not path.is_file():
            raise SettingsError(f"invalid configuration:\n  CXSTREAM_{name.upper()}: no such file: {path}")
    try:
        return create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            # Without this, OpenSSL would prompt on the terminal for an encrypted key's
            # passphrase and a worker without one would hang at start-up.
            password=_no_passphrase,
        )
    except ssl.SSLError as exc:
        raise SettingsError(
            "invalid configuration:\n  CXSTREAM_KAFKA_SSL_CAFILE/CERTFILE/KEYFILE: "
            f"cannot load the TLS files: {exc}"
        ) from None


def _no_passphrase() -> str:
    raise SettingsError(
        "invalid configuration:\n  CXSTREAM_KAFKA_SSL_KEYFILE: the client key is encrypted; "
        "provide it unencrypted (key passphrases are not supported)"
    )


def _sasl_credentials(settings: Settings) -> tuple[str, str]:
    username = settings.kafka_sasl_username
    password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
    missing = [
        name
        for name, value in (
            ("CXSTREAM_KAFKA_SASL_USERNAME", username),
            ("CXSTREAM_KAFKA_SASL_PASSWORD", password),
        )
        if not value
    ]
    if missing:
        raise SettingsError(
            "invalid configuration:\n"
            + "\n".join(
                f"  {name}: required when CXSTREAM_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
                for name in missing
            )
        )
    return username, password  # type: ignore[return-value]


def _warn_unused_tls_files(settings: Settings) -> None:
    if settings.kafka_security_protocol in SSL_PROTOCOLS:
        return
    unused = [
        f"CXSTREAM_{name.upper()}"
        for name in ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
        if getattr(settings, name) is not None
    ]
    if unused:
        log.warning(
            "%s set but CXSTREAM_KAFKA_SECURITY_PROTOCOL=%s: TLS is not used (did you mean SSL or SASL_SSL?)",
            ", ".join(unused),
            settings.kafka_security_protocol,
        )


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments for any aiokafka client, from settings.

    ``PLAINTEXT`` gives ``{"security_protocol": "PLAINTEXT"}``, so the result can always
    be splatted into a client's arguments. Raises :class:`SettingsError` naming the
    variable when SASL lacks a user name or password, or a TLS file is missing.
    """
    _warn_unused_tls_files(settings)
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol in SSL_PROTOCOLS:
        kwargs["ssl_context"] = kafka_ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        username, password = _sasl_credentials(settings)
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = username
        kwargs["sasl_plain_password"] = password
    return kwargs


def faust_broker_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials``: None (plaintext), SSL or SASL credentials.

    Faust passes them to every client it creates (consumer, producer, the admin client
    that creates its internal topics). ``faust.SASLCredentials`` covers PLAIN and SCRAM;
    with a TLS context it selects ``SASL_SSL``, without one ``SASL_PLAINTEXT``.
    """
    import faust

    _warn_unused_tls_files(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = kafka_ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    username, password = _sasl_credentials(settings)
    return faust.SASLCredentials(
        username=username,
        password=password,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,
    )


def describe_kafka_security(settings: Settings) -> str:
    """A one-line, secret-free summary for start-up logs, e.g. ``SASL_SSL SCRAM-SHA-512 as 'cx'``."""
    protocol = settings.kafka_security_protocol
    parts: list[str] = [protocol]
    if protocol in SASL_PROTOCOLS:
        parts.append(f"{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}")
    if protocol in SSL_PROTOCOLS:
        parts.append(f"CA {settings.kafka_ssl_cafile or 'system default'}")
        if settings.kafka_ssl_certfile:
            parts.append(f"client certificate {settings.kafka_ssl_certfile}")
    return " ".join(parts)


# --------------------------------------------------------------------------- secrets in logs


def secret_values(settings: Settings) -> list[str]:
    """Every secret the settings hold, as plain strings (for redaction only)."""
    values: list[str] = []
    if settings.kafka_sasl_password is not None:
        values.append(settings.kafka_sasl_password.get_secret_value())
    for secret in (
        settings.wallboard_token,
        settings.ingest_token,
        settings.twilio_auth_token,
        settings.zendesk_webhook_secret,
        settings.intercom_client_secret,
    ):
        if secret is not None:
            values.append(secret.get_secret_value())
    url = settings.redis_url.get_secret_value()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        values.append(password)
        values.append(unquote(password))
    return values


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_REDACTED_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text


class _RedactingRecordFactory:
    """A LogRecord factory that masks secrets in the message and its arguments.

    A record factory (rather than a handler filter) because Faust/mode reconfigure the
    logging handlers when the worker starts; the factory applies to every record from
    every logger, whatever handlers are installed later.
    """

    def __init__(self, previous: Any, secrets: list[str]) -> None:
        self.previous = previous
        self.secrets = secrets

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return record
        cleaned = redact(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[1] is not None:
            # The traceback is formatted later, by the handler; an exception that quotes a
            # secret (a URL, a config dict) is pre-formatted here, masked.
            text = logging.Formatter().formatException(record.exc_info)
            cleaned = redact(text, self.secrets)
            if cleaned != text:
                record.exc_text, record.exc_info = cleaned, None
        return record


def install_log_redaction(settings: Settings) -> None:
    """Mask the settings' secret values in every log record from now on (idempotent)."""
    secrets = [s for s in secret_values(settings) if len(s) >= MIN_REDACTED_LENGTH]
    if not secrets:
        return
    current = logging.getLogRecordFactory()
    if isinstance(current, _RedactingRecordFactory):
        current.secrets = sorted(set(current.secrets) | set(secrets))
        return
    logging.setLogRecordFactory(_RedactingRecordFactory(current, sorted(set(secrets))))


__all__ = [
    "describe_kafka_security",
    "faust_broker_credentials",
    "install_log_redaction",
    "kafka_client_kwargs",
    "kafka_ssl_context",
    "redact",
    "secret_values",
]
