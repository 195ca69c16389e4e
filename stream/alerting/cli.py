"""``cxstream alerts``: list active alerts, ack one, snooze a rule."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of ``cxstream alerts``."""


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream alerts``."""
    print("alerts: not implemented yet")
    return 1
