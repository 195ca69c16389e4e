"""The few JMESPath functions vendor payloads need beyond the standard library.

JMESPath (the query language of the AWS CLI, https://jmespath.org) selects and reshapes
JSON, which is most of what a platform mapping does; what it lacks is small and
vendor-shaped: a queue id at the end of an ARN, epoch seconds where the contract wants
milliseconds, a JSON document inside a string (Twilio's ``TaskAttributes``), a
case-insensitive match, and the mapping's own value tables (a vendor's channel names to
the contract's). Each function here is total: a null in gives a null out, so an absent
vendor field leaves the contract field out instead of failing the payload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jmespath.functions
import orjson
from jmespath.functions import signature

from stream.config.timeutil import parse_event_time_ms


class UnmappedValue(ValueError):
    """A value a mapping table has no entry for (reason ``unmapped_value:<table>``)."""

    def __init__(self, table: str, value: object) -> None:
        super().__init__(f"no {table!r} entry for {value!r}")
        self.table = table
        self.value = value


#: The default entry of a table: what any value not listed maps to.
DEFAULT_ENTRY = "*"


class MappingFunctions(jmespath.functions.Functions):
    """Standard JMESPath plus ``lower``, ``upper``, ``last_segment``, ``seconds_to_ms``,
    ``epoch_ms``, ``epoch_seconds``, ``from_json`` and ``lookup`` (docs/platforms.md, "Writing a mapping")."""

    def __init__(self, tables: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        self.tables = tables or {}

    @signature({"types": ["string", "null"]})
    def _func_lower(self, text: str | None) -> str | None:
        return None if text is None else text.lower()

    @signature({"types": ["string", "null"]})
    def _func_upper(self, text: str | None) -> str | None:
        return None if text is None else text.upper()

    @signature({"types": ["string", "null"]}, {"types": ["string"]})
    def _func_last_segment(self, text: str | None, separator: str) -> str | None:
        """``last_segment('arn:aws:connect:...:queue/abc', '/')`` is ``abc``."""
        if not text:
            return None
        return text.rsplit(separator, 1)[-1] or None

    @signature({"types": ["number", "string", "null"]})
    def _func_seconds_to_ms(self, value: float | str | None) -> int | None:
        """Epoch seconds (a number or numeric text, as form bodies send it) -> epoch ms."""
        if value is None or isinstance(value, bool):
            return None
        try:
            return round(float(value) * 1000)
        except ValueError:
            return None

    @signature({"types": ["number", "string", "null"]})
    def _func_epoch_ms(self, value: float | str | None) -> int | str | None:
        """A vendor time whose unit varies (Twilio sends seconds in one place, milliseconds in
        another): a number below 10^11 is seconds (10^11 s is the year 5138), above it
        milliseconds; numeric text likewise; other text (ISO-8601) is passed through."""
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return value or None
        else:
            number = value
        return round(number * 1000) if abs(number) < 1e11 else round(number)

    @signature({"types": ["number", "string", "null"]})
    def _func_epoch_seconds(self, value: float | str | None) -> int | None:
        """Whole epoch seconds of a vendor time (ISO-8601 text, or seconds / milliseconds as
        :meth:`_func_epoch_ms` tells them apart): for event ids built from a time that two
        sources write with different precision (Amazon Connect's events carry milliseconds,
        its contact records whole seconds). Null when it is not a time."""
        ms = self._func_epoch_ms(value)
        if isinstance(ms, str):
            try:
                ms = parse_event_time_ms(ms)
            except (ValueError, OverflowError):
                return None
        return None if ms is None else ms // 1000

    @signature({"types": ["string", "null"]})
    def _func_from_json(self, text: str | None) -> Any:
        """A JSON document inside a string field; null when it is not JSON."""
        if not text:
            return None
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return None

    @signature({"types": ["string"]}, {"types": ["string", "number", "boolean", "null"]})
    def _func_lookup(self, table: str, value: object) -> Any:
        """``lookup('channel', mediaType)``: the mapping table's entry; a value it has no
        entry (and no ``"*"`` default) for rejects the payload, naming table and value."""
        if value is None:
            return None
        entries = self.tables.get(table)
        if entries is None:
            raise UnmappedValue(table, value)
        key = value if isinstance(value, str) else orjson.dumps(value).decode()
        if key in entries:
            return entries[key]
        if DEFAULT_ENTRY in entries:
            return entries[DEFAULT_ENTRY]
        raise UnmappedValue(table, value)
