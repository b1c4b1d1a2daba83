"""The Philox stream: known answers, counter layout without reuse, the normal transform."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inertia_gpu import rng

# Random123's known-answer vectors for Philox4x32-10 (kat_vectors).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    out = rng.philox4x32(*(torch.tensor(c) for c in ctr), *key)
    assert tuple(int(o) for o in out) == expected


def _philox_python(ctr, key):
    """Independent scalar Philox4x32-10 in Python integers (no torch, no splitting tricks)."""
    c = list(ctr)
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & rng.MASK32, p1 & rng.MASK32, ((p0 >> 32) ^ c[3] ^ k1) & rng.MASK32,
             p0 & rng.MASK32]
        k0, k1 = (k0 + 0x9E3779B9) & rng.MASK32, (k1 + 0xBB67AE85) & rng.MASK32
    return c


def test_philox_matches_scalar_python_on_random_counters():
    g = np.random.default_rng(12345)
    ctrs = g.integers(0, 2 ** 32, size=(200, 4), dtype=np.uint64).astype(np.int64)
    key = tuple(int(x) for x in g.integers(0, 2 ** 32, size=2))
    out = rng.philox4x32(*(torch.from_numpy(ctrs[:, i]) for i in range(4)), *key)
    got = torch.stack(out, dim=1).numpy()
    for row, c in zip(got, ctrs):
        assert list(row) == _philox_python([int(x) for x in c], key)


def test_normals_are_standard():
    """Mean 0, variance 1, kurtosis 3 of 4e5 draws, as z-scores with a fixed seed."""
    n = 100_000
    z = rng.normals4(torch.arange(n), 7, 3, 0, seed=2024, dtype=torch.float64).reshape(-1).numpy()
    m = z.size
    assert abs(z.mean()) / math.sqrt(1.0 / m) < 4
    assert abs(z.var() - 1.0) / math.sqrt(2.0 / m) < 4
    assert abs((z ** 4).mean() - 3.0) / math.sqrt(96.0 / m) < 4
    # the four lanes are uncorrelated
    z4 = z.reshape(-1, 4)
    for i in range(4):
        for j in range(i + 1, 4):
            assert abs((z4[:, i] * z4[:, j]).mean()) * math.sqrt(n) < 4


def test_transform_in_float32_agrees_with_float64():
    c = torch.arange(10_000)
    z32 = rng.normals4(c, 1, 2, 0, seed=5, dtype=torch.float32).double()
    z64 = rng.normals4(c, 1, 2, 0, seed=5, dtype=torch.float64)
    assert torch.allclose(z32, z64, rtol=2e-6, atol=2e-6)


# --- the counter layout ------------------------------------------------------------

def _key(traj, step, coord, tag):
    (c0, c1, c2, c3), lane = rng.ensemble_counter(torch.tensor(traj), torch.tensor(step), torch.tensor(coord), tag)
    return (int(c0), int(c1), int(c2), int(c3), int(lane))


@settings(max_examples=400, derandomize=True)
@given(a=st.tuples(st.integers(0, 10 ** 8 - 1), st.integers(0, 10 ** 5 - 1), st.integers(0, 10 ** 3 - 1),
                   st.integers(0, 2)),
       b=st.tuples(st.integers(0, 10 ** 8 - 1), st.integers(0, 10 ** 5 - 1), st.integers(0, 10 ** 3 - 1),
                   st.integers(0, 2)))
def test_distinct_draws_never_share_a_counter(a, b):
    if a != b:
        assert _key(*a) != _key(*b)


def test_layout_fits_1e8_trajectories_1e5_steps_1e3_coordinates():
    """Each index has its own 32-bit word: the largest indices of the run land in range, unchanged.

    The map (trajectory, step, coordinate) -> (c0, c1, c2, lane) = (t, n // 4, i, n % 4) is
    invertible on its range; checking that it round-trips at the corners of the box and that
    no word wraps proves no two draws of such a run can share a counter.
    """
    T, N, D = 10 ** 8, 10 ** 5, 10 ** 3
    for t in (0, T - 1):
        for n in (0, 1, 3, 4, N - 1):
            for i in (0, D - 1):
                c0, c1, c2, c3, lane = _key(t, n, i, rng.TAG_STEP)
                assert (c0, 4 * c1 + lane, c2, c3) == (t, n, i, rng.TAG_STEP)
                assert max(c0, c1, c2, c3) < 2 ** 32
    # a naive single 32-bit offset t*N*D + n*D + i would have wrapped:
    assert T * N * D > 2 ** 32


def test_counter_out_of_range_is_refused():
    with pytest.raises(ValueError, match="trajectory"):
        rng.ensemble_counter(torch.tensor(2 ** 32), torch.tensor(0), torch.tensor(0))
    with pytest.raises(ValueError, match="step"):
        rng.ensemble_counter(torch.tensor(0), torch.tensor(4 * 2 ** 32), torch.tensor(0))
    with pytest.raises(ValueError, match="coordinate"):
        rng.ensemble_counter(torch.tensor(0), torch.tensor(0), torch.tensor(-1))


def test_optimizer_stream_uses_all_four_lanes_and_element_order():
    z = rng.optimizer_normals(10, step=3, parameter=2, seed=9, dtype=torch.float64)
    direct = rng.normals4(torch.arange(3), 3, 2, rng.TAG_OPTIMIZER, seed=9, dtype=torch.float64).reshape(-1)[:10]
    assert torch.equal(z, direct)
    assert len(set(z.tolist())) == 10
