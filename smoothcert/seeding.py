"""The one seeding rule: the user's seed, and every generator seed derived from it.

* **The user's seed** is any integer in [0, 2**63 - 1] (``check_seed``: a ValueError naming
  ``seed`` otherwise). Its default is 0 everywhere -- the library calls as the CLI's ``--seed``
  -- so every run is reproducible unless told otherwise.
* **Derived seeds** (``derive_seed(seed, *parts)``): the seed of one item of a run -- an input's
  index (the certify/predict/attack runner), an epoch (the training permutation), an epoch and a
  process rank (the training RNGs), a corruption name and severity. Always a valid seed of
  ``torch.Generator.manual_seed`` (an integer in [0, 2**64 - 1]), for every user seed:

  - integer parts only, at most two: the first releases' values, kept bit for bit (committed
    logs and runs reproduce): ``seed * 1_000_003 + i`` and ``(seed * 1_000_003 + i) * 4099 + j``,
    while that fits in 64 bits (every seed below 2**32 with the indices, epochs and ranks of a
    real run);
  - otherwise (a name among the parts, or a value that would not fit): the first 63 bits of the
    SHA-256 of ``"seed:part:part..."`` (what the corruption benchmark always used).
"""
from __future__ import annotations

import hashlib
from typing import Any

from .validation import ArgumentError

SEED_MAX = 2**63 - 1
# the strides of the first releases' linear rule: 1_000_003 (a prime: distinct seeds per (seed, index) for
# indices below it, i.e. every test split), then 4099 (process ranks)
SEED_STRIDE = 1_000_003
RANK_STRIDE = 4099
_STRIDES = (SEED_STRIDE, RANK_STRIDE)
_GENERATOR_MAX = 2**64 - 1  # torch.Generator.manual_seed takes [0, 2**64 - 1] (and negatives)


def check_seed(seed: Any, name: str = "seed") -> int:
    """``seed`` as an int; ArgumentError naming ``name`` unless it is an integer in [0, 2**63 - 1]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        if isinstance(seed, float) and seed.is_integer() and 0 <= seed <= SEED_MAX:
            return int(seed)
        raise ArgumentError(name, f"{name} must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)


def derive_seed(seed: int, *parts: int | str) -> int:
    """The generator seed of item ``parts`` of a run seeded by ``seed`` (see the module doc):
    integer parts fold in linearly (the first releases' values) while the result fits in 64 bits,
    anything else is hashed. ``seed`` is checked (``check_seed``)."""
    seed = check_seed(seed)
    if len(parts) <= len(_STRIDES) and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                           for p in parts):
        value = seed
        for stride, part in zip(_STRIDES, parts):
            value = value * stride + part  # type: ignore[operator]
        if value <= _GENERATOR_MAX:
            return value
    text = ":".join(str(int(p) if isinstance(p, int) else p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


__all__ = ["RANK_STRIDE", "SEED_MAX", "SEED_STRIDE", "check_seed", "derive_seed"]
