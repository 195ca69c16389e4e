"""Amazon Connect: contact events (EventBridge) and contact records (Kinesis / Firehose).

Neither is signed by AWS: both reach cxstream through a service that can add a header
(an EventBridge API destination, a Firehose HTTP endpoint destination's access key, or a
relay of yours), so they authenticate with the shared bearer token. The two formats share
the event-id prefix ``amazon-connect``: a wait read from both counts once.
"""

from __future__ import annotations

from typing import Final, Literal

FORMATS: Final[dict[str, Literal["bearer"]]] = {
    "amazon-connect-events": "bearer",
    "amazon-connect-ctr": "bearer",
}
