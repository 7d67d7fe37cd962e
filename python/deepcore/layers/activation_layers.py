"""Activation layers with parameters or state: LeakyReLU, PReLU, RReLU, ELU, Swish."""
from __future__ import annotations

__all__: list[str] = []
