"""Alert rules, their evaluation on a timer in the worker, and the Redis sink.

``install(cx)`` is called by :func:`stream.app.create_app` to attach the rule
evaluator and the KPI snapshot writer to a worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.app import CxStream


def install(cx: CxStream) -> None:
    """Attach alert evaluation and Redis snapshots to the worker (placeholder until built)."""
