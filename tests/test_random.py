"""Philox4x32-10 and the generators built on it (uniform, normal, truncated
normal, permutation), plus gather_rows.

Statistical checks use sample sizes and tolerances of several standard
errors (>= 6 sigma), with fixed seeds, so they are deterministic and do not
flake, yet a wrong scale, shift or range would fail them.
"""

import math

import numpy as np
import pytest

import deepcore
from deepcore import _core as C


# --------------------------------------------------------------------------
# Known answers (Random123 kat_vectors, philox4x32_10)
# --------------------------------------------------------------------------
@pytest.mark.parametrize("counter,key,expected", [
    ([0, 0, 0, 0], [0, 0], [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]),
    ([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2, [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]),
    ([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0],
     [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]),
])
def test_philox4x32_10_matches_random123_known_answers(counter, key, expected):
    assert list(C.philox4x32_10(counter, key)) == expected


def _uniform(n, seed, stream, low=0.0, high=1.0):
    out = np.empty(n, np.float32)
    C.philox_uniform(out, seed, stream, low, high)
    return out


def _normal(n, seed, stream, mean=0.0, std=1.0, truncated=False):
    out = np.empty(n, np.float32)
    C.philox_normal(out, seed, stream, mean, std, truncated)
    return out


def test_uniform_element_i_is_lane_i_mod_4_of_block_i_div_4():
    # philox.h: counter = (block lo, block hi, stream lo, stream hi), key = seed;
    # 24 high bits -> [0, 1).
    seed, stream = 0x1234_5678_9ABC, 0x0000_0007_0000_0003
    u = _uniform(12, seed, stream)
    for i in range(12):
        block = i // 4
        r = C.philox4x32_10([block & 0xFFFFFFFF, block >> 32, stream & 0xFFFFFFFF, stream >> 32],
                            [seed & 0xFFFFFFFF, seed >> 32])
        assert u[i] == np.float32((r[i % 4] >> 8) / 2.0**24)


# --------------------------------------------------------------------------
# uniform
# --------------------------------------------------------------------------
@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-2.0, 3.0), (-0.05, 0.05), (0.25, 0.5)])
def test_uniform_is_in_range_with_correct_mean_and_variance(low, high):
    n = 400_000
    u = _uniform(n, 7, 1, low, high).astype(np.float64)
    assert u.min() >= low and u.max() < high
    span = high - low
    se_mean = span / math.sqrt(12 * n)
    assert abs(u.mean() - (low + high) / 2) < 6 * se_mean
    assert u.var() == pytest.approx(span**2 / 12, rel=0.01)
    # it fills the range: both ends are approached
    assert u.min() < low + 1e-4 * span and u.max() > high - 1e-4 * span


def test_uniform_histogram_is_flat():
    n, bins = 500_000, 50
    counts, _ = np.histogram(_uniform(n, 3, 9), bins=bins, range=(0.0, 1.0))
    expected = n / bins
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 49 degrees of freedom: mean 49, std ~9.9; 110 is ~6 sigma.
    assert chi2 < 110


def test_uniform_default_range_is_zero_to_one():
    out = np.empty(10_000, np.float32)
    C.philox_uniform(out, 1, 2)
    np.testing.assert_array_equal(out, _uniform(10_000, 1, 2, 0.0, 1.0))
    assert out.min() >= 0.0 and out.max() < 1.0


def test_uniform_never_returns_high_when_rounding_could_reach_it():
    # Seed 149, stream 0, element 193582 draws the largest 24-bit fraction,
    # u = 1 - 2^-24. On [1, 2) the exact value 1 + u = 2 - 2^-24 is not a
    # float32; it rounds (to even) to 2.0 == high, which [low, high) excludes.
    idx = 193_582
    u = _uniform(idx + 1, 149, 0)
    assert u[idx] == np.float32(1.0 - 2.0**-24)  # the premise: the top draw
    v = _uniform(idx + 1, 149, 0, 1.0, 2.0)
    assert v.min() >= 1.0
    assert v.max() < 2.0, f"philox_uniform(low=1, high=2) returned {v.max()!r} at index {int(v.argmax())}"


@pytest.mark.parametrize("low,high", [(10.0, 10.5), (-10.0, -9.5)])
def test_uniform_on_a_narrow_range_far_from_zero_excludes_high(low, high):
    # Where ulp(high) > (high - low) * 2^-24, low + (high - low) * u rounds up
    # to high for the top few 24-bit draws: about one draw in a million here.
    u = _uniform(400_000, 7, 1, low, high)
    assert u.min() >= low
    assert u.max() < high, f"{int((u >= high).sum())} of {u.size} draws equal high={high}"


# --------------------------------------------------------------------------
# normal
# --------------------------------------------------------------------------
@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (1.0, 2.0), (-3.0, 0.05)])
def test_normal_has_requested_mean_and_std(mean, std):
    n = 400_000
    x = _normal(n, 3, 0, mean, std).astype(np.float64)
    assert abs(x.mean() - mean) < 6 * std / math.sqrt(n)
    assert x.std() == pytest.approx(std, rel=6 / math.sqrt(2 * n))
    z = (x - mean) / std
    # tails of a normal: P(|z| > 2) = 0.0455, P(|z| > 3) = 0.0027
    assert np.mean(np.abs(z) > 2) == pytest.approx(0.0455, abs=0.002)
    assert np.mean(np.abs(z) > 3) == pytest.approx(0.0027, abs=0.0005)
    assert abs(np.mean(z**3)) < 0.03  # symmetric


def test_normal_lanes_are_uncorrelated():
    x = _normal(400_000, 5, 2).reshape(-1, 4).astype(np.float64)
    corr = np.corrcoef(x.T)
    off = corr[~np.eye(4, dtype=bool)]
    assert np.abs(off).max() < 0.015  # se ~ 1/sqrt(100000) = 0.003


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (2.0, 0.5), (-1.0, 3.0)])
def test_truncated_normal_stays_within_two_std(mean, std):
    n = 400_000
    x = _normal(n, 11, 4, mean, std, truncated=True).astype(np.float64)
    assert np.all(np.isfinite(x))
    assert np.all(np.abs(x - mean) <= 2 * std * (1 + 1e-6))
    z = (x - mean) / std
    # truncated standard normal on [-2, 2]: std = 0.87962566...
    assert z.std() == pytest.approx(0.8796256610, rel=0.005)
    assert abs(z.mean()) < 6 * 0.88 / math.sqrt(n)
    # it reaches close to the edges (the redraws are not, say, clipped to 1 std)
    assert np.abs(z).max() > 1.99


def test_truncated_normal_keeps_in_range_draws_of_the_plain_normal():
    plain = _normal(100_000, 13, 6)
    trunc = _normal(100_000, 13, 6, truncated=True)
    inside = np.abs(plain) <= 2.0
    np.testing.assert_array_equal(trunc[inside], plain[inside])
    assert np.any(trunc[~inside] != plain[~inside])


# --------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------
@pytest.mark.parametrize("gen", ["uniform", "normal", "truncated"])
def test_same_seed_and_stream_repeat_and_other_streams_or_seeds_differ(gen):
    def draw(seed, stream):
        if gen == "uniform":
            return _uniform(5000, seed, stream)
        return _normal(5000, seed, stream, truncated=gen == "truncated")

    a = draw(42, 3)
    np.testing.assert_array_equal(a, draw(42, 3))
    for other in (draw(42, 4), draw(43, 3), draw(42, 3 + (1 << 32)), draw(42 + (1 << 32), 3)):
        assert np.mean(a == other) < 0.01


def test_a_shorter_draw_is_a_prefix_of_a_longer_one():
    np.testing.assert_array_equal(_uniform(1001, 8, 8)[:999], _uniform(999, 8, 8))
    np.testing.assert_array_equal(_normal(1003, 8, 8, truncated=True)[:1001], _normal(1001, 8, 8, truncated=True))


@pytest.mark.parametrize("gen", ["uniform", "normal", "truncated"])
def test_draws_are_identical_for_one_and_two_threads(gen):
    n = 2_100_003  # > 2M: above every parallel threshold; odd size for a partial last block
    before = deepcore.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            deepcore.set_num_threads(threads)
            assert deepcore.get_num_threads() == threads
            if gen == "uniform":
                out.append(_uniform(n, 99, 4, -1.0, 1.0))
            else:
                out.append(_normal(n, 99, 4, truncated=gen == "truncated"))
    finally:
        deepcore.set_num_threads(before)
    np.testing.assert_array_equal(out[0], out[1])
    assert np.all(np.isfinite(out[0]))


# --------------------------------------------------------------------------
# permutation
# --------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 2, 5, 1000, 100_003])
def test_permutation_is_a_permutation_of_range_n(n):
    p = C.philox_permutation(n, 5, 2)
    assert p.dtype == np.int64 and p.shape == (n,)
    np.testing.assert_array_equal(np.sort(p), np.arange(n))


def test_permutation_is_deterministic_and_depends_on_seed_and_stream():
    p = C.philox_permutation(1000, 5, 2)
    np.testing.assert_array_equal(p, C.philox_permutation(1000, 5, 2))
    assert not np.array_equal(p, C.philox_permutation(1000, 5, 3))
    assert not np.array_equal(p, C.philox_permutation(1000, 6, 2))
    assert np.mean(p == np.arange(1000)) < 0.02  # it actually shuffles


def test_permutation_of_three_is_uniform_over_all_six_orders():
    # Fisher-Yates gives each of the n! orders with equal probability (an
    # off-by-one, e.g. Sattolo's j < i, would give only 2 of the 6).
    trials = 6000
    counts = {}
    for seed in range(trials):
        key = tuple(C.philox_permutation(3, seed, 1).tolist())
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 6
    expected = trials / 6
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 30  # 5 dof: mean 5, ~6 sigma


def test_permutation_first_position_is_uniform():
    n, trials = 10, 5000
    firsts = np.array([C.philox_permutation(n, 77, s)[0] for s in range(trials)])
    counts = np.bincount(firsts, minlength=n)
    expected = trials / n
    assert float(((counts - expected) ** 2 / expected).sum()) < 40  # 9 dof


def test_permutation_rejects_negative_n():
    with pytest.raises(ValueError, match="n must be >= 0"):
        C.philox_permutation(-1, 0, 0)


# --------------------------------------------------------------------------
# gather_rows
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_gather_rows_copies_the_named_rows(dtype):
    src = np.arange(10 * 3 * 2).reshape(10, 3, 2).astype(dtype)
    idx = np.array([3, 0, 9, 3, 5], np.int64)
    dst = np.full((5, 3, 2), -1, dtype)
    C.gather_rows(src, idx, dst)
    np.testing.assert_array_equal(dst, src[idx])


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_gather_rows_of_1d_source(dtype):
    src = (np.arange(20) * 7).astype(dtype)
    idx = np.array([19, 0, 4], np.int64)
    dst = np.zeros(3, dtype)
    C.gather_rows(src, idx, dst)
    np.testing.assert_array_equal(dst, src[idx])


def test_gather_rows_with_a_permutation_batch():
    src = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    perm = C.philox_permutation(100, 3, 3)
    dst = np.empty_like(src)
    C.gather_rows(src, perm, dst)
    np.testing.assert_array_equal(dst, src[perm])


def test_gather_rows_large_copy_parallel_path():
    # >= 4 * 2^20 bytes takes the OpenMP path.
    src = np.arange(600_000 * 4, dtype=np.float32).reshape(600_000, 4)
    idx = C.philox_permutation(600_000, 1, 1)
    dst = np.empty_like(src)
    before = deepcore.get_num_threads()
    try:
        deepcore.set_num_threads(2)
        C.gather_rows(src, idx, dst)
    finally:
        deepcore.set_num_threads(before)
    np.testing.assert_array_equal(dst, src[idx])


def test_gather_rows_empty_index_writes_nothing_and_reads_nothing():
    src = np.arange(8, dtype=np.float32).reshape(4, 2)
    memory = np.full((3, 2), -5.0, np.float32)
    dst = memory[:0]  # an empty view at the start of memory: any write would land there
    assert dst.shape == (0, 2) and dst.__array_interface__["data"][0] == memory.__array_interface__["data"][0]
    C.gather_rows(src, np.zeros(0, np.int64), dst)
    np.testing.assert_array_equal(memory, -5.0)
    np.testing.assert_array_equal(src, np.arange(8).reshape(4, 2))
    # from an empty source too (0 rows: no index is valid, and none is given)
    C.gather_rows(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), dst)
    np.testing.assert_array_equal(memory, -5.0)
    with pytest.raises(ValueError, match="out of range"):
        C.gather_rows(np.zeros((0, 2), np.float32), np.zeros(1, np.int64), memory[:1])


@pytest.mark.parametrize("bad", [10, -1, 1 << 40])
def test_gather_rows_index_out_of_range_raises_and_copies_nothing(bad):
    src = np.arange(20, dtype=np.float32).reshape(10, 2)
    dst = np.full((3, 2), -5.0, np.float32)
    with pytest.raises(ValueError, match=r"out of range.*\[0, 10\)"):
        C.gather_rows(src, np.array([1, bad, 2], np.int64), dst)
    np.testing.assert_array_equal(dst, -5.0)
