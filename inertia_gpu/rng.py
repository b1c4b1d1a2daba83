"""The one random stream: counter-based Philox4x32-10 and its normal transform.

Every backend draws noise as a pure function of (seed, trajectory, step,
coordinate) through this generator, so results do not depend on block size,
chunking, number of devices or backend, and a run resumes bit for bit. The
counter layout is documented in docs/CONVENTIONS.md; this module is its
executable form, written with int64 torch ops so it runs on any device.

torch is imported inside the functions that compute with it: the constants and
`seed_key` serve the configuration and the numba launcher, which never load torch.
"""
from __future__ import annotations

import math

MASK32 = 0xFFFFFFFF
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10

# Stream tags (c3 of the counter): which use a draw serves.
from .spec import TAG_INIT, TAG_OPTIMIZER, TAG_SPECTRUM, TAG_STEP  # noqa: E402,F401

WORD = 1 << 32
MAX_TRAJECTORIES = WORD
MAX_COORDINATES = WORD
MAX_STEPS = 4 * WORD


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * m for 32-bit a and m, without overflow.

    int64 cannot hold a 64-bit product, so m is split into 16-bit halves:
    a*m = (a*m_hi) 2**16 + a*m_lo, each partial below 2**48.
    """
    lo_part = a * (m & 0xFFFF)
    hi_part = a * (m >> 16)
    mid = lo_part + ((hi_part & 0xFFFF) << 16)
    hi = (hi_part >> 16) + (mid >> 32)
    return hi & MASK32, mid & MASK32


def philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = ROUNDS):
    """Philox4x32-10 on int64 tensors holding uint32 values; returns four such tensors."""
    import torch
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & MASK32 for c in (c0, c1, c2, c3))
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    k0 &= MASK32
    k1 &= MASK32
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & MASK32
        k1 = (k1 + PHILOX_W1) & MASK32
    return c0, c1, c2, c3


def seed_key(seed: int) -> tuple[int, int]:
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed & MASK32, seed >> 32


def uniform24(x: torch.Tensor, dtype: torch.dtype, open_at_zero: bool) -> torch.Tensor:
    """Top 24 bits of a uint32 as a uniform; exact in float32 and float64."""
    u = (x >> 8).to(dtype)
    if open_at_zero:
        u = u + 1.0
    return u * (2.0 ** -24)


def box_muller(xa: torch.Tensor, xb: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    u1 = uniform24(xa, dtype, open_at_zero=True)
    u2 = uniform24(xb, dtype, open_at_zero=False)
    r = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    return r * torch.cos(angle), r * torch.sin(angle)


def normals4(c0, c1, c2, c3, seed: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Four standard normals per counter, stacked on a new last axis (lane); dtype default float32."""
    import torch
    dtype = torch.float32 if dtype is None else dtype
    k0, k1 = seed_key(seed)
    x0, x1, x2, x3 = philox4x32(c0, c1, c2, c3, k0, k1)
    z0, z1 = box_muller(x0, x1, dtype)
    z2, z3 = box_muller(x2, x3, dtype)
    return torch.stack((z0, z1, z2, z3), dim=-1)


def _check_range(name: str, values: torch.Tensor, limit: int) -> None:
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= limit):
        raise ValueError(f"{name} index out of the counter's range [0, {limit})")


def ensemble_counter(trajectory, step, coordinate, tag: int = TAG_STEP):
    """(counter words, lane) of the ensemble stream; see docs/CONVENTIONS.md.

    Each index has a word of its own, so distinct (trajectory, step,
    coordinate, tag) never share a (counter, lane): the layout cannot wrap
    at any size below the limits checked here.
    """
    import torch
    trajectory = torch.as_tensor(trajectory, dtype=torch.int64)
    step = torch.as_tensor(step, dtype=torch.int64)
    coordinate = torch.as_tensor(coordinate, dtype=torch.int64)
    _check_range("trajectory", trajectory, MAX_TRAJECTORIES)
    _check_range("step", step, MAX_STEPS)
    _check_range("coordinate", coordinate, MAX_COORDINATES)
    c0, c1, c2 = torch.broadcast_tensors(trajectory, step // 4, coordinate)
    c3 = torch.full_like(c0, tag)
    return (c0, c1, c2, c3), step % 4


def step_normals(trajectories: torch.Tensor, step: int, dim: int, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Noise xi[t, i] for the step from state `step` to `step + 1`, shape [len(trajectories), dim].

    A reference evaluation: it draws all four lanes and keeps one. Fast
    paths keep all four (one call serves four steps).
    """
    import torch
    device = trajectories.device
    coords = torch.arange(dim, device=device, dtype=torch.int64)
    (c0, c1, c2, c3), lane = ensemble_counter(trajectories[:, None], torch.tensor(step, device=device), coords[None, :])
    return normals4(c0, c1, c2, c3, seed, dtype)[..., int(lane)]


def init_normals(trajectories: torch.Tensor, dim: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard normals for theta_0 (lane 0) and v_0 (lane 1), each [len(trajectories), dim]."""
    import torch
    device = trajectories.device
    coords = torch.arange(dim, device=device, dtype=torch.int64)
    (c0, c1, c2, c3), _ = ensemble_counter(trajectories[:, None], torch.tensor(0, device=device), coords[None, :], TAG_INIT)
    z = normals4(c0, c1, c2, c3, seed, dtype)
    return z[..., 0], z[..., 1]


def spectrum_draws(trajectories: torch.Tensor, dim: int, seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(uniform in [0, 1), standard normal) per (trajectory, coordinate) for drawn spectra."""
    import torch
    device = trajectories.device
    coords = torch.arange(dim, device=device, dtype=torch.int64)
    (c0, c1, c2, c3), _ = ensemble_counter(trajectories[:, None], torch.tensor(0, device=device), coords[None, :], TAG_SPECTRUM)
    k0, k1 = seed_key(seed)
    x0, x1, _, _ = philox4x32(c0, c1, c2, c3, k0, k1)
    z0, _ = box_muller(x0, x1, dtype)
    return uniform24(x0, dtype, open_at_zero=False), z0


def optimizer_counter(element, step: int, parameter: int):
    """(counter words, lane) of the optimizer stream, keyed by (step, parameter, element)."""
    import torch
    element = torch.as_tensor(element, dtype=torch.int64)
    group = element // 4
    if not 0 <= step < WORD:
        raise ValueError(f"optimizer step {step} outside [0, 2**32)")
    if not 0 <= parameter < WORD:
        raise ValueError(f"parameter index {parameter} outside [0, 2**32)")
    c0 = group & MASK32
    c3 = TAG_OPTIMIZER + (group >> 32) * 16
    c1 = torch.full_like(c0, step)
    c2 = torch.full_like(c0, parameter)
    return (c0, c1, c2, c3), element % 4


def optimizer_normals(numel: int, step: int, parameter: int, seed: int, dtype: torch.dtype,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """Noise for every element of one parameter tensor (flattened), all four lanes used."""
    import torch
    groups = torch.arange((numel + 3) // 4, device=device, dtype=torch.int64)
    (c0, c1, c2, c3), _ = optimizer_counter(groups * 4, step, parameter)
    return normals4(c0, c1, c2, c3, seed, dtype).reshape(-1)[:numel]
