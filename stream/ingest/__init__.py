"""Platforms in, live: the HTTP ingest server and the Kafka bridge (edges).

Both translate with :mod:`stream.platforms` and produce with :mod:`stream.ingest.delivery`,
which reports a payload as taken only after the broker acknowledged all it maps to.
"""
