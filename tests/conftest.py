"""Shared fixtures: ``fake_cuda`` installs the CPU-backed double of
deepcore._cuda (tests/fake_cuda.py) for one test."""
from fake_cuda import fake_cuda  # noqa: F401
