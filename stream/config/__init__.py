"""Configuration and time, read by every layer: settings (CXSTREAM_*), credentials, logging,
retry policies, durations and the window clock.
"""
