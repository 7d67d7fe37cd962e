"""Philox4x32-10: known answers, distributions, determinism across thread counts."""
import numpy as np
import pytest

import deepcore as dc
from deepcore._native import core


@pytest.mark.parametrize("counter,key,want", [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
])
def test_philox_matches_random123_known_answers(counter, key, want):
    assert list(core.philox4x32_10(counter, key)) == want


def test_uniform_is_in_range_with_the_right_moments():
    x = np.empty(400_000, np.float32)
    core.philox_uniform(x, 7, 1, -2.0, 3.0)
    assert x.min() >= -2.0 and x.max() < 3.0
    assert x.mean() == pytest.approx(0.5, abs=0.01)
    assert x.var() == pytest.approx(25 / 12, rel=0.01)


def test_normal_and_truncated_normal_moments():
    x = np.empty(400_000, np.float32)
    core.philox_normal(x, 3, 0, 1.0, 2.0, False)
    assert x.mean() == pytest.approx(1.0, abs=0.02) and x.std() == pytest.approx(2.0, rel=0.01)
    core.philox_normal(x, 3, 1, 0.0, 1.0, True)
    assert np.abs(x).max() <= 2.0
    assert x.std() == pytest.approx(0.87962566, rel=0.01)


def test_same_seed_and_stream_repeat_and_other_streams_differ():
    a, b, c = (np.empty(1000, np.float32) for _ in range(3))
    core.philox_uniform(a, 11, 5, 0, 1)
    core.philox_uniform(b, 11, 5, 0, 1)
    core.philox_uniform(c, 11, 6, 0, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("truncated", [False, True])
def test_draws_are_identical_for_one_and_two_threads(truncated):
    n = 3_000_000  # above the parallel threshold
    before = dc.get_num_threads()
    try:
        dc.set_num_threads(1)
        a = np.empty(n, np.float32)
        core.philox_normal(a, 99, 4, 0.0, 1.0, truncated)
        u1 = np.empty(n, np.float32)
        core.philox_uniform(u1, 99, 4, 0, 1)
        dc.set_num_threads(2)
        b = np.empty(n, np.float32)
        core.philox_normal(b, 99, 4, 0.0, 1.0, truncated)
        u2 = np.empty(n, np.float32)
        core.philox_uniform(u2, 99, 4, 0, 1)
    finally:
        dc.set_num_threads(before)
    assert np.array_equal(a, b) and np.array_equal(u1, u2)


def test_permutation_is_a_deterministic_permutation():
    p = core.philox_permutation(1000, 5, 2)
    assert sorted(p.tolist()) == list(range(1000))
    assert np.array_equal(p, core.philox_permutation(1000, 5, 2))
    assert not np.array_equal(p, core.philox_permutation(1000, 5, 3))
    assert not np.array_equal(p, np.arange(1000))


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_gather_rows_copies_the_named_rows(dtype):
    src = np.arange(40).reshape(10, 4).astype(dtype)
    idx = np.array([3, 0, 9, 3], np.int64)
    dst = np.empty((4, 4), dtype)
    core.gather_rows(src, idx, dst)
    assert np.array_equal(dst, src[idx])
