"""Reuse of capability results: keyed by (capability, inputs hash), each reusable for its TTL.

The inputs hash covers the canonical request and the pricing pack's content hash, so a hit is
the same computation on the same data. The TTL bounds how long a result about a stored
portfolio may be reused after that portfolio changes.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


class ResultCache:
    """An in-memory, size-bounded result cache with an injectable clock (seconds, monotonic)."""

    def __init__(self, clock: Clock = time.monotonic, max_entries: int = 256):
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, dict[str, Any]]] = OrderedDict()
        # The HTTP server calls from many threads; an OrderedDict's check-then-move is not atomic.
        self._lock = threading.Lock()

    def get(self, capability: str, inputs_hash: str) -> dict[str, Any] | None:
        """A copy of the stored result marked ``_metadata.cached = true``, or None when absent or expired."""
        key = (capability, inputs_hash)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, body = entry
            if self._clock() >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        hit = copy.deepcopy(body)
        hit["_metadata"]["cached"] = True
        return hit

    def put(
        self, capability: str, inputs_hash: str, body: dict[str, Any], ttl_seconds: int
    ) -> None:
        """Keep a copy of ``body`` for ``ttl_seconds`` (0 keeps nothing); evicts the least recently used."""
        if ttl_seconds <= 0:
            return
        key = (capability, inputs_hash)
        stored = copy.deepcopy(body)
        with self._lock:
            self._entries[key] = (self._clock() + ttl_seconds, stored)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every result (after a write that may change what they were computed from)."""
        with self._lock:
            self._entries.clear()
