"""Learning-rate schedules, usable as an optimizer's learning_rate (per step)."""
from __future__ import annotations
