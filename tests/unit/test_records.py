"""Typed state records: compact on the changelog, and a changelog of the old format still reads.

Before the typed records a contact was a JSON object with short keys, pending items and
customer-history entries positional arrays. A worker upgraded in place recovers such a
changelog: these tests recover one written in the old format and check that the state,
and the counts that follow, are what the new format gives.
"""

from __future__ import annotations

import orjson

from stream.config.settings import load_settings
from stream.domain.processor import Processor
from stream.domain.records import (
    Contact,
    CustomerContact,
    PendingEnd,
    PendingSurvey,
    contact_from_changelog,
    encoder,
    history_from_changelog,
)
from stream.domain.state import PartitionState
from stream.runtime.commitlog import StateLogTable
from tests.unit.test_processor import WALL, Feed, commit, totals

MIN = 60_000

#: A contact as the old code wrote it: started, transferred, one survey seen, and a
#: survey of the old 8-element layout (before team/agent) still waiting.
OLD_CONTACT = {
    "t": WALL - MIN,
    "tr": 2,
    "st": WALL - 2 * MIN,
    "q": "billing",
    "ch": "voice",
    "cu": "u-1",
    "tm": "north",
    "tq": "retention",
    "en": 1,
    "sv": ["sv1:csat"],
    "pd": [["s", WALL - MIN, "csat", 4, None, WALL, "vip", None], ["e", WALL - MIN, True, 30.5, WALL]],
}


def test_an_old_contact_record_reads_as_the_typed_one() -> None:
    contact = contact_from_changelog(OLD_CONTACT)
    assert contact == Contact(
        newest_ms=WALL - MIN,
        transfers=2,
        started_ms=WALL - 2 * MIN,
        queue="billing",
        channel="voice",
        customer="u-1",
        ended=True,
        team="north",
        to_queue="retention",
        surveys=["sv1:csat"],
        pending=[
            PendingSurvey(WALL - MIN, "csat", 4, None, WALL, "vip", None),
            PendingEnd(WALL - MIN, True, 30.5, WALL),
        ],
    )
    # ... and what the new code writes for it reads back the same.
    assert contact_from_changelog(orjson.loads(encoder.encode(contact))) == contact


def test_pending_items_and_histories_keep_their_old_positional_layout() -> None:
    end = PendingEnd(WALL - MIN, None, None, WALL)
    assert orjson.loads(encoder.encode(end)) == ["e", WALL - MIN, None, None, WALL]
    history = [CustomerContact(WALL - MIN, "chat", "billing\x1fchat", "invoice", "c-1", 1, "voice")]
    old = [[WALL - MIN, "chat", "billing\x1fchat", "invoice", "c-1", 1, "voice"]]
    assert orjson.loads(encoder.encode(history)) == old
    assert history_from_changelog(old) == history


def test_a_contact_is_written_as_its_set_fields_under_short_keys() -> None:
    contact = Contact(
        newest_ms=WALL, started_ms=WALL, queue="billing", channel="voice", customer="u-1", ended=True
    )
    written = orjson.loads(encoder.encode(contact))
    assert written == {"t": WALL, "st": WALL, "q": "billing", "ch": "voice", "cu": "u-1", "en": True}
    assert contact_from_changelog(written) == contact
    assert orjson.loads(encoder.encode(Contact(newest_ms=WALL))) == {"t": WALL}


def _recover(records: list[tuple[bytes, object]]) -> PartitionState:
    state = PartitionState(0)
    for key, (_, _, payload) in records:  # type: ignore[misc]
        StateLogTable._apply_record(state, {}, key.decode(), payload)
    return state


def _as_old_format(records: list[tuple[bytes, object]]) -> list[tuple[bytes, object]]:
    """The same changelog as the code before the typed records wrote it (``"en": 1``)."""
    out = []
    for key, (generation, sequence, payload) in records:  # type: ignore[misc]
        if key.startswith(b"c:") and isinstance(payload, dict) and payload.get("en") is True:
            payload = {**payload, "en": 1}
        out.append((key, (generation, sequence, payload)))
    assert out != records  # something was rewritten
    return out


def test_state_recovered_from_an_old_changelog_counts_on_exactly_like_the_new() -> None:
    settings = load_settings()
    feed = Feed()
    state = PartitionState(0)
    processor = Processor(settings)
    processor.process_batch(
        state,
        [
            feed.start("c1", WALL - 5 * MIN, queue="billing", customer_id="u-1"),
            feed.transfer("c1", WALL - 4 * MIN, to_queue="retention"),
            feed.survey("c2", WALL - 4 * MIN, "csat", 5, survey_id="sv"),  # waits for its start
            feed.end("c2", WALL - 3 * MIN, resolved=True),
        ],
        WALL,
    )
    log = [(key, value) for _, key, value in commit(state).sent]
    new, old = _recover(log), _recover(_as_old_format(log))
    assert old.contacts == new.contacts == state.contacts
    assert old.contacts["c2"].pending and len(old.contacts["c2"].pending) == 2

    # The rest of the story, applied to both: c2 starts, c1 ends.
    later = [
        feed.start("c2", WALL - 3 * MIN, queue="sales", channel="chat"),
        feed.end("c1", WALL - 2 * MIN, resolved=False),
    ]
    for recovered in (new, old):
        Processor(settings).process_batch(recovered, later, WALL)
    assert totals(old) == totals(new) and totals(new)
