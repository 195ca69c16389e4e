"""Who may post to ``/ingest/{format}``: the vendor's signature, or the shared bearer token.

A signing vendor (Twilio, Zendesk, Intercom) whose secret is configured must sign; the
shared token (``CXSTREAM_INGEST_TOKEN``) is accepted as well, for a webhook set to bearer
authentication or a relay in between. Every other format needs the token. A format with
no credential configured accepts nothing: there is no unauthenticated mode.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from stream.config.settings import Settings, SettingsError
from stream.platforms import signatures
from stream.platforms.registry import Platform

SECRET_SETTINGS = {
    "twilio": "twilio_auth_token",
    "zendesk": "zendesk_webhook_secret",
    "intercom": "intercom_client_secret",
}


def _value(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value() or None


def vendor_secret(platform: Platform, settings: Settings) -> str | None:
    """The configured signing secret of the platform's vendor, if it signs and one is set."""
    name = SECRET_SETTINGS.get(platform.auth)
    return None if name is None else _value(getattr(settings, name))


def refusal(
    platform: Platform, settings: Settings, *, url: str, headers: Mapping[str, str], body: bytes, form: bool
) -> str | None:
    """Why a request is refused (None: it is authentic)."""
    secret = vendor_secret(platform, settings)
    token = _value(settings.ingest_token)
    if secret is not None:
        if platform.auth == "twilio":
            valid = signatures.twilio_valid(secret, url, body, headers.get("X-Twilio-Signature"), form=form)
        elif platform.auth == "zendesk":
            valid = signatures.zendesk_valid(
                secret,
                headers.get("X-Zendesk-Webhook-Signature-Timestamp"),
                body,
                headers.get("X-Zendesk-Webhook-Signature"),
            )
        else:
            valid = signatures.intercom_valid(secret, body, headers.get("X-Hub-Signature"))
        if valid:
            return None
    if token is not None and signatures.bearer_valid(token, headers.get("Authorization")):
        return None
    if secret is None and token is None:
        return f"no credential is configured for {platform.format}"
    return "bad or missing signature" if secret is not None else "bad or missing bearer token"


def require_credentials(settings: Settings) -> None:
    """Fail fast when no credential at all is set: the server would refuse every request."""
    if _value(settings.ingest_token) is None and not any(
        _value(getattr(settings, name)) for name in SECRET_SETTINGS.values()
    ):
        raise SettingsError(
            "invalid configuration:\n  CXSTREAM_INGEST_TOKEN: required by `cxstream ingest` unless a vendor "
            "secret is set (CXSTREAM_TWILIO_AUTH_TOKEN, CXSTREAM_ZENDESK_WEBHOOK_SECRET, "
            "CXSTREAM_INTERCOM_CLIENT_SECRET); there is no unauthenticated mode"
        )
