"""A bounded, weighted least-recently-used mapping: the per-process caches'
one home (provenance fragments and model hashes, flow definitions and plans)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A bounded mapping: past `max_weight`, the least recently used entries go."""

    def __init__(self, max_weight: int, weight: Callable[[K, V], int] | None = None) -> None:
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._max_weight = max_weight
        self._weight = weight or (lambda _k, _v: 1)
        self.total_weight = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V) -> None:
        weight = self._weight(key, value)
        if weight > self._max_weight:
            return  # larger than the whole cache: not worth evicting everything for
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_weight -= old[1]
        self._entries[key] = (value, weight)
        self.total_weight += weight
        while self.total_weight > self._max_weight:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.total_weight -= dropped

    def __len__(self) -> int:
        return len(self._entries)
