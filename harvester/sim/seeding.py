"""Independent, reproducible random streams derived from the one ``--seed``.

Every consumer (day volumes, one day's rows, a permutation, a mutation, the fault plan) gets
its own stream keyed by a label, so adding a consumer never shifts another's numbers, and
nothing depends on Python's per-process ``hash()`` randomisation.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A 64-bit seed for the stream named by ``parts`` under ``seed``."""
    text = ":".join([str(seed), *(str(p) for p in parts)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")
