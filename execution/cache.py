"""Output cache: input signatures and the classic / LRU / RAM / none policies.

A node's key covers its class, constants, IS_CHANGED value and (transitively) its ancestors'
keys, exactly the information ComfyUI's signature holds.  Instead of materialising the whole
ancestry per node (quadratic on long chains) each key is a digest of the node's own signature
plus its parents' digests, so keys cost O(V+E) in total and never recurse.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable

_unique = itertools.count()
_PROCESS_SALT = os.urandom(8).hex()


def never_equal() -> str:
    """A token no other signature can produce: NaN / unhashable values mean 'always re-run'."""
    return f"!unique:{_PROCESS_SALT}:{next(_unique)}"


def canonical(value: Any) -> str:
    """Deterministic text for a constant or IS_CHANGED value; unknown objects never compare equal."""
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    if isinstance(value, float):
        return never_equal() if math.isnan(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        try:
            return "{" + ",".join(f"{canonical(k)}:{canonical(value[k])}" for k in sorted(value)) + "}"
        except TypeError:
            return never_equal()
    return never_equal()


def node_key(class_type: str, is_changed: str, identity: str | None, inputs: Iterable[tuple[str, str]]) -> bytes:
    """Digest of one node's immediate signature; link inputs carry their source's digest."""
    h = hashlib.blake2b(digest_size=16)
    h.update(class_type.encode())
    h.update(b"\x00")
    h.update(is_changed.encode())
    if identity is not None:
        h.update(b"\x01")
        h.update(identity.encode())
    for name, value in inputs:
        h.update(b"\x02")
        h.update(name.encode())
        h.update(b"\x03")
        h.update(value.encode())
    return h.digest()


def estimate_bytes(value: Any) -> int:
    """RAM estimate of a cached value: tensors by nbytes, objects may expose get_ram_usage()."""
    stack = [value]
    total = 0
    seen = 0
    while stack and seen < 100_000:
        item = stack.pop()
        seen += 1
        nbytes = getattr(item, "nbytes", None)
        if isinstance(nbytes, int):
            total += nbytes
            continue
        usage = getattr(item, "get_ram_usage", None)
        if callable(usage):
            total += int(usage())
            continue
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        else:
            total += 64
    return total


@dataclass(slots=True)
class CacheEntry:
    outputs: list  # one list per output slot
    ui: dict | None
    nbytes: int
    generation: int
    touched: float


@dataclass(frozen=True)
class CachePolicy:
    """How long outputs survive between prompts.

    kind: "classic" (keep what the current prompt can reuse), "lru" (size = entries),
    "ram" (size = byte budget; headroom = keep this much system RAM available), "none".
    """

    kind: str = "classic"
    size: int = 0
    headroom: int = 0

    @classmethod
    def parse(cls, text: str | dict | None) -> "CachePolicy | None":
        """'classic' | 'none' | 'lru:N' | 'ram:BYTES' (extra_data / CLI form)."""
        if text is None:
            return None
        if isinstance(text, dict):
            return cls(str(text.get("kind", "classic")), int(text.get("size", 0)), int(text.get("headroom", 0)))
        kind, _, arg = str(text).partition(":")
        if kind not in ("classic", "lru", "ram", "none"):
            raise ValueError(f"unknown cache policy {text!r}; use classic, none, lru:N or ram:BYTES")
        size = int(float(arg)) if arg else 0
        if kind in ("lru", "ram") and size <= 0:
            raise ValueError(f"cache policy {text!r} needs a positive size")
        return cls(kind, size)

    def describe(self) -> str:
        return self.kind if self.kind in ("classic", "none") else f"{self.kind}:{self.size}"


class OutputCache:
    """Node outputs by signature digest; the policy decides what survives between prompts."""

    def __init__(self, policy: CachePolicy) -> None:
        self.policy = policy
        self.entries: OrderedDict[bytes, CacheEntry] = OrderedDict()
        self.generation = 0
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def begin_prompt(self, live_keys: set[bytes], policy: CachePolicy) -> None:
        """Apply the policy at prompt start; `live_keys` are the current prompt's node keys."""
        self.generation += 1
        if policy.kind == "classic":
            for key in [k for k in self.entries if k not in live_keys]:
                self._drop(key)
        elif policy.kind == "none":
            self.clear()

    def end_prompt(self, policy: CachePolicy) -> None:
        if policy.kind == "none":
            self.clear()
        elif policy.kind == "lru":
            while len(self.entries) > policy.size:
                key, entry = next(iter(self.entries.items()))
                if entry.generation == self.generation:
                    break
                self._drop(key)
        elif policy.kind == "ram":
            self.trim_ram(policy)

    def trim_ram(self, policy: CachePolicy) -> None:
        """Evict least recently used entries while over the byte budget or under the RAM headroom."""
        while self.entries and (self.total_bytes > policy.size or _available_ram() < policy.headroom):
            key = next(iter(self.entries))
            self._drop(key)

    def get(self, key: bytes) -> CacheEntry | None:
        entry = self.entries.get(key)
        if entry is not None:
            entry.generation = self.generation
            entry.touched = time.monotonic()
            self.entries.move_to_end(key)
        return entry

    def __contains__(self, key: bytes) -> bool:
        return key in self.entries

    def set(self, key: bytes, outputs: list, ui: dict | None, measure: bool) -> None:
        old = self.entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old.nbytes
        nbytes = estimate_bytes(outputs) if measure else 0
        self.entries[key] = CacheEntry(outputs, ui, nbytes, self.generation, time.monotonic())
        self.total_bytes += nbytes

    def _drop(self, key: bytes) -> None:
        entry = self.entries.pop(key)
        self.total_bytes -= entry.nbytes

    def clear(self) -> None:
        self.entries.clear()
        self.total_bytes = 0


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62
