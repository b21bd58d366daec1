"""Randomness seeded by (run seed, record id, purpose), never from global state.

Reruns reproduce exactly; two records, two purposes or two replicas differ.
"""

from __future__ import annotations

import hashlib
import random


def seed_for(run_seed: int, record_id: str, purpose: str) -> int:
    h = hashlib.sha256(f"{run_seed}\x1f{record_id}\x1f{purpose}".encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")


def rng_for(run_seed: int, record_id: str, purpose: str) -> random.Random:
    return random.Random(seed_for(run_seed, record_id, purpose))
