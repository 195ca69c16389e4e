"""The formats cxstream reads: the shipped vendors, plus a user's own mapping files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

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
    shipped: bool


def load_format(name: str, *, max_label_length: int = 64) -> Platform:
    """A shipped format by name (``cxstream translate --from NAME``)."""
    if name not in FORMATS:
        raise MappingFileError(f"unknown format {name!r}; formats: {', '.join(sorted(FORMATS))}")
    spec = load_spec(MAPPINGS_DIR / f"{name}.yml")
    return Platform(name, Mapping(spec, max_label_length=max_label_length), FORMATS[name], shipped=True)


def load_mapping_file(path: Path, *, max_label_length: int = 64) -> Platform:
    """A user's own mapping file (authenticated with the bearer token)."""
    spec = load_spec(path)
    if spec.format in FORMATS:
        raise MappingFileError(f"mapping file {path}: format {spec.format!r} is a shipped format; rename it")
    return Platform(spec.format, Mapping(spec, max_label_length=max_label_length), "bearer", shipped=False)


def load_platforms(extra_files: Iterable[Path] = (), *, max_label_length: int = 64) -> dict[str, Platform]:
    """Every shipped format and the user's mapping files, by format name."""
    platforms = {name: load_format(name, max_label_length=max_label_length) for name in FORMATS}
    for path in extra_files:
        platform = load_mapping_file(path, max_label_length=max_label_length)
        if platform.format in platforms:
            raise MappingFileError(f"mapping file {path}: format {platform.format!r} is defined twice")
        platforms[platform.format] = platform
    return platforms
