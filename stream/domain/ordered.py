"""Short event-time-ordered lists, kept sorted as events arrive in any order.

A contact's wait events and an agent's state changes are a handful of items, mostly
arriving in order, so an insertion that walks back from the end beats re-sorting and
keeps the list sorted for the pairing and interval code that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def insert_in_order(items: list[T], item: T, key: Callable[[T], Any]) -> bool:
    """Insert ``item`` by ``key`` (after equal keys); False, and nothing inserted, when the
    item just before its place is equal to it (the same event delivered again)."""
    position = len(items)
    wanted = key(item)
    while position and key(items[position - 1]) > wanted:
        position -= 1
    if position and items[position - 1] == item:
        return False
    items.insert(position, item)
    return True
