"""``cxstream wallboard``: the live wallboard page server."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream wallboard``."""


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream wallboard``."""
    print("wallboard: not implemented yet")
    return 1
