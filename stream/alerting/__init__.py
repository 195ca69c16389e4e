"""Alert rules, their evaluation for the whole contact center, and the Redis sink.

Nothing here knows Faust or the app: :func:`stream.alerting.service.build_service` takes
the settings and what the service reads (partition states, the window reader, the
clock), and the runtime (:mod:`stream.runtime.app`) schedules its loop and timers. See
docs/alerts.md.
"""
