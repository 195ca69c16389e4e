"""``cxstream replay FILE.jsonl``: recompute history from a recorded file.

Placeholder until built.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``cxstream replay``."""
    parser.add_argument("file", help="JSONL file: {topic, key, value|value_b64} per line")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``cxstream replay``."""
    print("replay: not implemented yet")
    return 1
