"""Waits in queue: pairing ``contact_queued`` with its answer or abandon (contract v2).

The pure pairing and counting rules; the processor keeps each contact's wait events in its
record and counts what changes (:meth:`stream.domain.processor.Processor._settle_waits`).

A contact's wait events are kept in event-time order and the waits are *recomputed*
from all of them whenever one arrives, because events arrive out of order: an answer
that arrives before its ``contact_queued`` must still pair with it once it comes. The
counts a contact contributed are the difference between the waits before and after,
so an out-of-order arrival corrects earlier counts instead of adding to them (the same
approach as the repeat classification). The rules, in event-time order
(``../shared/CONTRACT.md``, "Queue and agent events"):

* ``contact_queued`` opens a wait on its queue; if a wait is open it ends that one as
  *transferred* (not answered, not abandoned, not in ``waits_ended``);
* ``contact_answered`` / ``contact_abandoned`` end the open wait; with none open they end
  nothing and count as unmatched;
* ``contact_ended`` ends an open wait as abandoned (and is no wait event otherwise).

Events at the same millisecond are ordered queued, answered/abandoned, ended, so the
result never depends on arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from stream.domain.ordered import insert_in_order

QUEUED: Final = "q"
ANSWERED: Final = "a"
ABANDONED: Final = "b"
ENDED: Final = "e"
_ORDER: Final = {QUEUED: 0, ANSWERED: 1, ABANDONED: 1, ENDED: 2}

Outcome = Literal["answered", "abandoned", "transferred"]


class WaitEvent(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One event of a contact's waits, as the contact record keeps it."""

    ts_ms: int
    kind: str
    #: The queue named on ``contact_queued`` (informational on the others).
    queue: str | None = None
    channel: str | None = None
    #: The event's id, to order two events of one kind at one millisecond deterministically.
    event_id: str = ""

    def order(self) -> tuple[int, int, str]:
        return self.ts_ms, _ORDER[self.kind], self.event_id


class Wait(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A wait in a queue: open (``outcome`` None) or ended."""

    queued_ms: int
    queue: str
    channel: str | None
    ended_ms: int | None = None
    outcome: Outcome | None = None

    @property
    def seconds(self) -> float | None:
        """How long the customer waited, once the wait ended."""
        return None if self.ended_ms is None else (self.ended_ms - self.queued_ms) / 1000


class Pairing(msgspec.Struct, frozen=True):
    """The waits of one contact from its wait events, and the answers/abandons matching none."""

    waits: tuple[Wait, ...]
    unmatched: int

    @property
    def open(self) -> Wait | None:
        """The wait still open (the contact is waiting now), if any."""
        return self.waits[-1] if self.waits and self.waits[-1].outcome is None else None


def insert(events: list[WaitEvent], event: WaitEvent) -> bool:
    """Insert ``event`` in order; False if the same event is already there (a redelivery)."""
    return insert_in_order(events, event, WaitEvent.order)


def pair(events: Iterable[WaitEvent]) -> Pairing:
    """The waits of one contact from its events in event-time order (see the module doc)."""
    waits: list[Wait] = []
    open_wait: Wait | None = None
    unmatched = 0
    for event in sorted(events, key=WaitEvent.order):
        kind = event.kind
        if kind == QUEUED:
            if open_wait is not None:
                waits.append(_end(open_wait, event.ts_ms, "transferred"))
            open_wait = Wait(event.ts_ms, event.queue or "", event.channel)
        elif kind in (ANSWERED, ABANDONED):
            if open_wait is None:
                unmatched += 1
                continue
            waits.append(_end(open_wait, event.ts_ms, "answered" if kind == ANSWERED else "abandoned"))
            open_wait = None
        elif kind == ENDED and open_wait is not None:
            waits.append(_end(open_wait, event.ts_ms, "abandoned"))
            open_wait = None
    if open_wait is not None:
        waits.append(open_wait)
    return Pairing(tuple(waits), unmatched)


def _end(wait: Wait, ended_ms: int, outcome: Outcome) -> Wait:
    return Wait(wait.queued_ms, wait.queue, wait.channel, ended_ms, outcome)


class WaitCounts(msgspec.Struct, frozen=True):
    """What one ended wait adds to the windowed counters (at its end's event time)."""

    waits_ended: int = 0
    answered: int = 0
    answered_within_threshold: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answer_wait_seconds: float = 0.0


def counts_of(wait: Wait, threshold_s: float, short_abandon_s: float) -> WaitCounts | None:
    """The counts of an ended wait (None for an open or transferred one: it counts nothing).

    Within the threshold when ``wait <= threshold``; a short abandon when ``wait < short``.
    """
    seconds = wait.seconds
    if seconds is None or wait.outcome == "transferred":
        return None
    if wait.outcome == "answered":
        return WaitCounts(
            waits_ended=1,
            answered=1,
            answered_within_threshold=int(seconds <= threshold_s),
            answer_wait_seconds=seconds,
        )
    return WaitCounts(waits_ended=1, abandoned=1, short_abandoned=int(seconds < short_abandon_s))


def changed_waits(before: Pairing, after: Pairing) -> tuple[list[Wait], list[Wait]]:
    """Waits to uncount and to count when a contact's pairing changes from ``before`` to
    ``after`` (equal waits on both sides cancel out, so a late event touches only what it
    changed)."""
    old = list(before.waits)
    added: list[Wait] = []
    for wait in after.waits:
        if wait in old:
            old.remove(wait)
        else:
            added.append(wait)
    return old, added
