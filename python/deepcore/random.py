"""Seeding. All randomness in deepcore (initializers, shuffling, dropout) is
drawn from Philox4x32-10 streams keyed by a seed; ``set_random_seed`` makes a
whole run reproducible, whatever the thread count."""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_state = {"seed": int.from_bytes(os.urandom(8), "little") >> 1, "stream": 0}


def set_random_seed(seed: int) -> None:
    """Seed every generator that is not given its own seed (Keras's
    ``keras.utils.set_random_seed``)."""
    if not isinstance(seed, (int,)) or seed < 0:
        raise ValueError(f"set_random_seed: expected a non-negative int, got {seed!r}")
    with _lock:
        _state["seed"] = int(seed)
        _state["stream"] = 0


def next_stream() -> tuple[int, int]:
    """A fresh (seed, stream) pair from the global generator."""
    with _lock:
        _state["stream"] += 1
        return _state["seed"], _state["stream"]


def resolve(seed) -> tuple[int, int]:
    """(seed, stream) for an explicit seed, or the next global stream."""
    if seed is None:
        return next_stream()
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
    return int(seed), 0
