"""The contact center's domain, pure: typed events and state records, the partition state, the
pipeline (`Processor.apply`), KPI math and statistics. No Faust, no Kafka, no Redis, no
HTTP, no Prometheus.
"""
