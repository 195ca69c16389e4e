"""Alert rules, their evaluation on a timer in the worker, and the Redis sink.

``install(cx)`` is called by :func:`stream.app.create_app` to attach the rule
evaluator (lease holder or standby), the Redis writer, the partition-view writer and
their metrics to a worker.
See docs/alerts.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stream.alerting.service import AlertService
    from stream.app import CxStream


def install(cx: CxStream) -> AlertService:
    """Attach alert evaluation, Redis writes, partition views and interval metrics to the worker.

    The rules file is loaded and validated here, so a bad file stops the worker at
    start-up (:class:`stream.alerting.rules.RuleError`, a ``SettingsError``).
    """
    from stream.alerting.rules import load_rules_for
    from stream.alerting.service import install_service, label_names_of

    rules = load_rules_for(cx.settings, label_names_of(cx.processor))
    service = install_service(cx, rules)
    cx.alerting = service
    return service
