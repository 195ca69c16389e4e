"""The formats cxstream reads: the shipped vendors, plus a user's own mapping files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from stream.config.settings import Settings
from stream.domain.events import EventValidator
from stream.platforms.amazon_connect import FORMATS as AMAZON_CONNECT
from stream.platforms.genesys import FORMATS as GENESYS
from stream.platforms.intercom import FORMATS as INTERCOM
from stream.platforms.mapping import Mapping, MappingFileError, load_spec
from stream.platforms.twilio import FORMATS as TWILIO
from stream.platforms.zendesk import FORMATS as ZENDESK

MAPPINGS_DIR: Final = Path(__file__).parent / "mappings"
#: How a request proves it comes from the platform (stream.platforms.signatures).
Auth = Literal["bearer", "twilio", "zendesk", "intercom"]

#: Format name -> how its webhooks authenticate, one entry per shipped mapping file.
FORMATS: Final[dict[str, Auth]] = {
    **AMAZON_CONNECT,
    **TWILIO,
    **GENESYS,
    **ZENDESK,
    **INTERCOM,
}


@dataclass(frozen=True)
class Platform:
    """A format ready to translate: its compiled mapping and how its senders authenticate."""

    format: str
    mapping: Mapping
    auth: Auth


def load_format(name: str, *, validator: EventValidator | None = None) -> Platform:
    """A shipped format by name (``cxstream translate --from NAME``)."""
    if name not in FORMATS:
        raise MappingFileError(f"unknown format {name!r}; formats: {', '.join(sorted(FORMATS))}")
    spec = load_spec(MAPPINGS_DIR / f"{name}.yml")
    return Platform(name, Mapping(spec, validator=validator), FORMATS[name])


def load_mapping_file(path: Path, *, validator: EventValidator | None = None) -> Platform:
    """A user's own mapping file (authenticated with the bearer token)."""
    spec = load_spec(path)
    if spec.format in FORMATS:
        raise MappingFileError(f"mapping file {path}: format {spec.format!r} is a shipped format; rename it")
    return Platform(spec.format, Mapping(spec, validator=validator), "bearer")


def load_platforms(
    extra_files: Iterable[Path] = (), *, validator: EventValidator | None = None
) -> dict[str, Platform]:
    """Every shipped format and the user's mapping files, by format name."""
    platforms = {name: load_format(name, validator=validator) for name in FORMATS}
    for path in extra_files:
        platform = load_mapping_file(path, validator=validator)
        if platform.format in platforms:
            raise MappingFileError(f"mapping file {path}: format {platform.format!r} is defined twice")
        platforms[platform.format] = platform
    return platforms


def configured_platforms(settings: Settings) -> dict[str, Platform]:
    """The formats the ingest server and the bridge read: the shipped ones and the files of
    ``CXSTREAM_INGEST_MAPPINGS``, validating events with the worker's limits."""
    files = [Path(p.strip()) for p in settings.ingest_mappings.split(",") if p.strip()]
    return load_platforms(files, validator=EventValidator.for_settings(settings))
