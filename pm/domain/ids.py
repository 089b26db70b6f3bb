"""Derived ids (DESIGN.md §4: never random, so every retry names the same thing). No I/O.

    uuid5_int(name, namespace.bytes)   # == uuid.uuid5(namespace, name).int, without building UUID objects

The ledger package derives its account and transfer ids the same way in `ledger.accounts` (it knows
nothing of PM); a unit test holds both to `uuid.uuid5`.
"""

from __future__ import annotations

import hashlib

_UUID5_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID5_SET = (0x8000 << 48) | (5 << 76)  # RFC 4122 variant, version 5


def uuid5_int(name: str, namespace_bytes: bytes) -> int:
    """`uuid.uuid5(namespace, name).int`: the SHA-1 of namespace and name, with version and variant set."""
    digest = hashlib.sha1(namespace_bytes + name.encode()).digest()
    return (int.from_bytes(digest[:16], "big") & _UUID5_CLEAR) | _UUID5_SET
