"""How each vendor signs its webhooks, checked in constant time (pure functions).

* Twilio: ``X-Twilio-Signature`` is base64(HMAC-SHA1(auth token, URL + the form's
  parameters sorted by name, each name followed by its value)); a JSON body (an Event
  Streams webhook sink) is covered by a ``bodySHA256`` query parameter of the signed URL.
* Zendesk: ``X-Zendesk-Webhook-Signature`` is base64(HMAC-SHA256(signing secret,
  ``X-Zendesk-Webhook-Signature-Timestamp`` + body)).
* Intercom: ``X-Hub-Signature`` is ``sha1=`` + hex(HMAC-SHA1(client secret, body)).
* Everyone else (EventBridge API destinations, Kinesis/Firehose relays, in-house senders):
  a shared bearer token, ``Authorization: Bearer <token>``.

The URL Twilio signs is the public one it called; behind a proxy that is not what the
server sees, so the ingest server takes it from ``CXSTREAM_INGEST_PUBLIC_URL``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import parse_qsl, urlsplit


def _b64_hmac(key: str, message: bytes, digest: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), message, digest).digest()).decode()


def _equal(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.strip().encode())


def twilio_signature(auth_token: str, url: str, body: bytes, *, form: bool) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for this request."""
    message = url
    if form:
        params = sorted(
            parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True), key=lambda p: p[0]
        )
        message += "".join(name + value for name, value in params)
    return _b64_hmac(auth_token, message.encode(), "sha1")


def twilio_valid(auth_token: str, url: str, body: bytes, signature: str | None, *, form: bool) -> bool:
    """Whether a request really comes from Twilio (form callback, or JSON with ``bodySHA256``)."""
    if not form:
        query = dict(parse_qsl(urlsplit(url).query))
        body_hash = query.get("bodySHA256")
        if body_hash is None or not hmac.compare_digest(hashlib.sha256(body).hexdigest(), body_hash.lower()):
            return False
    return _equal(twilio_signature(auth_token, url, body, form=form), signature)


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Zendesk-Webhook-Signature`` Zendesk sends."""
    return _b64_hmac(secret, timestamp.encode() + body, "sha256")


def zendesk_valid(secret: str, timestamp: str | None, body: bytes, signature: str | None) -> bool:
    """Whether a request really comes from this Zendesk webhook."""
    return timestamp is not None and _equal(zendesk_signature(secret, timestamp, body), signature)


def intercom_signature(client_secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature`` Intercom sends."""
    return "sha1=" + hmac.new(client_secret.encode(), body, "sha1").hexdigest()


def intercom_valid(client_secret: str, body: bytes, signature: str | None) -> bool:
    """Whether a request really comes from this Intercom app."""
    return _equal(intercom_signature(client_secret, body), signature)


def bearer_valid(token: str, authorization: str | None) -> bool:
    """Whether ``Authorization`` carries the shared token."""
    if authorization is None or not authorization.startswith("Bearer "):
        return False
    return _equal(token, authorization[len("Bearer ") :])
