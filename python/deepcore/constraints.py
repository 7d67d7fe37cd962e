"""Weight constraints applied after every update: MaxNorm."""
from __future__ import annotations
