"""Typed state records: what a partition remembers per contact and per customer.

msgspec Structs, so the hot path reads attributes instead of string keys and
positions, a record takes a fraction of a dict's memory (``gc=False``: they hold no
reference cycles, so the garbage collector need not track millions of them), and
the changelog stores them compactly: pending items and history entries as JSON arrays
in field order (``array_like``), a contact as an object of its set fields under short
keys.

Compatible with changelogs written before these types: their pending items and
customer histories were positional arrays in the same order (a pending item's first
element its tag, ``"e"`` or ``"s"``) and their contacts objects with the same short
keys, so they decode unchanged (:func:`contact_from_changelog`).
"""

from __future__ import annotations

from sys import intern
from typing import Any, Final

import msgspec

from stream.domain.agents import AgentRecord
from stream.domain.waits import Wait, WaitEvent


class PendingEnd(msgspec.Struct, array_like=True, tag="e", gc=False):
    """A ``contact_ended`` waiting for its ``contact_started``."""

    ts_ms: int
    resolved: bool | None
    handle_seconds: float | None
    #: Wall clock when it arrived: the join grace runs from here.
    received_ms: int


class PendingSurvey(msgspec.Struct, array_like=True, tag="s", gc=False):
    """A survey response waiting for its contact's queue and channel."""

    ts_ms: int
    metric: str
    score: int
    scale: str | None
    received_ms: int
    queue: str | None = None
    channel: str | None = None
    team: str | None = None
    agent: str | None = None


class PendingWaits(msgspec.Struct, array_like=True, tag="w", gc=False):
    """The contact's ended waits wait for its channel (``contact_started``) before being counted."""

    received_ms: int
    #: Event time of the newest wait event when deferred (for the record, not read).
    ts_ms: int = 0


Pending = PendingEnd | PendingSurvey | PendingWaits


class CountedWait(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """An ended wait as it was counted: exactly what to subtract if a late event changes it."""

    wait: Wait
    #: Dimension key it was counted under (queue, channel[, team][, agent]).
    dim: str
    within_threshold: bool
    short_abandon: bool


class Contact(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One contact, for the survey join, transfer counts and expiry.

    Keyed by short names with unset fields left out (a contact sets half of them), which
    is smaller on the changelog than an array holding every field.
    """

    #: Newest event time seen for the contact (ms): it expires ``CXSTREAM_CONTACT_TTL`` later.
    newest_ms: int = msgspec.field(name="t")
    transfers: int = msgspec.field(default=0, name="tr")
    #: Event time of ``contact_started``; None until it arrives.
    started_ms: int | None = msgspec.field(default=None, name="st")
    queue: str | None = msgspec.field(default=None, name="q")
    channel: str | None = msgspec.field(default=None, name="ch")
    customer: str | None = msgspec.field(default=None, name="cu")
    #: ``contact_ended`` was counted (once per contact).
    ended: bool = msgspec.field(default=False, name="en")
    agent: str | None = msgspec.field(default=None, name="ag")
    team: str | None = msgspec.field(default=None, name="tm")
    reason: str | None = msgspec.field(default=None, name="rs")
    #: Queue of the last transfer.
    to_queue: str | None = msgspec.field(default=None, name="tq")
    #: ``survey_id:metric`` pairs already counted (one response each).
    surveys: list[str] | None = msgspec.field(default=None, name="sv")
    #: Events waiting for ``contact_started``.
    pending: list[Pending] | None = msgspec.field(default=None, name="pd")
    #: Event time of ``contact_ended`` (ends an open wait as abandoned).
    ended_ms: int | None = msgspec.field(default=None, name="et")
    #: Queue / answer / abandon events in event-time order (stream.domain.waits).
    wait_events: list[WaitEvent] | None = msgspec.field(default=None, name="wq")
    #: The ended waits counted so far, as counted.
    counted_waits: list[CountedWait] | None = msgspec.field(default=None, name="wc")
    #: Answers / abandons that ended no wait, as last counted (cx_unmatched_wait_events_total).
    wait_unmatched: int = msgspec.field(default=0, name="wu")


class CustomerContact(msgspec.Struct, array_like=True, gc=False):
    """One contact start in a customer's history, for repeat and channel-switch detection."""

    ts_ms: int
    channel: str
    #: Dimension key the contact counts under (queue, channel[, team][, agent]).
    dim: str
    reason: str | None
    contact_id: str
    #: REPEAT / SWITCH / SAME_REASON bits as last counted (stream.domain.processor).
    flags: int = 0
    #: The previous contact's channel when it was counted as a switch.
    previous_channel: str | None = None


History = list[CustomerContact]


class ContactStart(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A contact start re-keyed by customer (``<app>-customer-contacts``), short keys."""

    event_id: str = msgspec.field(name="e")
    customer: str = msgspec.field(name="cu")
    contact_id: str = msgspec.field(name="c")
    ts_ms: int = msgspec.field(name="t")
    queue: str = msgspec.field(name="q")
    channel: str = msgspec.field(name="ch")
    reason: str | None = msgspec.field(default=None, name="r")
    team: str | None = msgspec.field(default=None, name="tm")
    agent: str | None = msgspec.field(default=None, name="ag")


encoder: Final = msgspec.json.Encoder()
start_decoder: Final = msgspec.json.Decoder(ContactStart)


def contact_from_changelog(payload: Any) -> Contact:
    """A contact as the changelog holds it (also as written before the typed records, whose
    ``en`` was ``1``: not strict about that)."""
    contact = msgspec.convert(payload, Contact, strict=False)
    for name in _CONTACT_LABELS:
        value = getattr(contact, name)
        if value is not None:
            setattr(contact, name, intern(value))
    return contact


#: Contact fields shared by many contacts, interned like the live pipeline does.
_CONTACT_LABELS: Final = ("queue", "channel", "agent", "team", "reason", "to_queue")


def agent_from_changelog(payload: Any) -> AgentRecord:
    """An agent's recent state changes as the changelog holds them."""
    return msgspec.convert(payload, AgentRecord)


def history_from_changelog(payload: Any) -> History:
    """A customer's history as the changelog (or the RocksDB store) holds it."""
    history = msgspec.convert(payload, History)
    for entry in history:
        entry.channel, entry.dim = intern(entry.channel), intern(entry.dim)
        if entry.reason is not None:
            entry.reason = intern(entry.reason)
        if entry.previous_channel is not None:
            entry.previous_channel = intern(entry.previous_channel)
    return history
