"""Weight penalties: l1, l2, l1_l2 (kernel_regularizer / bias_regularizer)."""
from __future__ import annotations
