"""The one cache policy: a bounded, thread-safe least-recently-used mapping."""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict


class LRU:
    """At most ``size`` entries; reading or writing an entry makes it the most recent,
    and the least recent is dropped beyond ``size``. Safe to share between threads."""

    def __init__(self, size: int):
        self.size = size
        self._entries: OrderedDict = OrderedDict()
        self.lock = threading.RLock()
        _ALL.add(self)

    def get(self, key, default=None):
        with self.lock:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                return default
            return self._entries[key]

    def put(self, key, value) -> None:
        with self.lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get_or_make(self, key, make):
        """The entry for ``key``, made by ``make()`` (outside the lock) if missing."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = make()
            self.put(key, value)
        return value

    def pop(self, key, default=None):
        with self.lock:
            return self._entries.pop(key, default)

    def items(self) -> list:
        """(key, value) pairs, least recent first (a snapshot)."""
        with self.lock:
            return list(self._entries.items())

    def clear(self, keep=None) -> None:
        """Drop every entry, or those for which ``keep(value)`` is false."""
        with self.lock:
            if keep is None:
                self._entries.clear()
            else:
                self._entries = OrderedDict((k, v) for k, v in self._entries.items() if keep(v))

    def keep_only(self, keep) -> None:
        """Drop the entries for which ``keep(value)`` is false, without the lock (for a
        forked child, where only one thread runs)."""
        self._entries = OrderedDict((k, v) for k, v in self._entries.items() if keep(v))

    def __len__(self) -> int:
        return len(self._entries)


_MISSING = object()
_ALL: "weakref.WeakSet[LRU]" = weakref.WeakSet()


def _new_locks_in_child():
    # A thread of the parent may have held a lock; it did not fork, so it never lets go.
    for cache in list(_ALL):
        cache.lock = threading.RLock()


os.register_at_fork(after_in_child=_new_locks_in_child)
