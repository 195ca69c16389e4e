"""cxstream: real-time customer-experience KPIs for contact centers, on Kafka and Faust."""

__version__ = "0.1.0"
