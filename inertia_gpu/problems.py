"""Toy losses, batched over trajectories, with analytic loss and gradient.

Every problem acts on theta of shape [trajectories, dim] and returns the
per-trajectory loss [trajectories] and gradient [trajectories, dim]. Exact
theory (inertia_gpu/theory.py) exists for the quadratic (the second-moment
recursion, docs/THEORY.md §3) and, at stationarity, for separable potentials
such as the double well (Gibbs quadrature, §4); Rosenbrock has neither.

The names and spectra here also serve the configuration, so torch is imported
only where a function computes with it.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import rng
from .coefficients import spectrum_parameters

PROBLEMS = ("quadratic", "double-well", "rosenbrock")


@dataclass(frozen=True)
class Problem:
    name: str
    dim: int

    def loss(self, theta: torch.Tensor, lam: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def grad(self, theta: torch.Tensor, lam: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Quadratic(Problem):
    """L = 1/2 sum_i lambda_i theta_i^2; lambda per trajectory when drawn from a distribution."""

    def loss(self, theta, lam=None):
        return 0.5 * (lam * theta * theta).sum(dim=-1)

    def grad(self, theta, lam=None):
        return lam * theta


@dataclass(frozen=True)
class DoubleWell(Problem):
    """L = sum_i (theta_i^2 - 1)^2 / 4, minima at +-1, barrier 1/4 per coordinate."""

    def loss(self, theta, lam=None):
        w = theta * theta - 1.0
        return 0.25 * (w * w).sum(dim=-1)

    def grad(self, theta, lam=None):
        return theta * (theta * theta - 1.0)


@dataclass(frozen=True)
class Rosenbrock(Problem):
    """Chained Rosenbrock sum_{i<d-1} 100 (theta_{i+1} - theta_i^2)^2 + (1 - theta_i)^2; d = 2 is the classic."""

    def loss(self, theta, lam=None):
        x, y = theta[:, :-1], theta[:, 1:]
        return (100.0 * (y - x * x) ** 2 + (1.0 - x) ** 2).sum(dim=-1)

    def grad(self, theta, lam=None):
        x, y = theta[:, :-1], theta[:, 1:]
        r = y - x * x
        g = theta.new_zeros(theta.shape)
        g[:, :-1] += -400.0 * x * r - 2.0 * (1.0 - x)
        g[:, 1:] += 200.0 * r
        return g


def make_problem(name: str, dim: int) -> Problem:
    if name == "quadratic":
        return Quadratic(name, dim)
    if name == "double-well":
        return DoubleWell(name, dim)
    if name == "rosenbrock":
        if dim < 2:
            raise ValueError("rosenbrock needs dim >= 2")
        return Rosenbrock(name, dim)
    raise ValueError(f"unknown problem {name!r}; allowed: {', '.join(PROBLEMS)}")


# --- spectra of the quadratic -------------------------------------------------

SPECTRUM_DISTRIBUTIONS = ("uniform", "loguniform", "lognormal")


def log_spaced_spectrum(dim: int, condition: float) -> list[float]:
    """Eigenvalues log-spaced from 1/condition up to 1 (so lr < 2 is stable for any condition)."""
    if dim == 1:
        return [1.0]
    return [condition ** (-(dim - 1 - i) / (dim - 1)) for i in range(dim)]


def drawn_spectrum(distribution: str, params: tuple[float, float], trajectories: torch.Tensor, dim: int,
                   seed: int, dtype: torch.dtype) -> torch.Tensor:
    """Per-trajectory eigenvalues [len(trajectories), dim] from the spectrum stream of Philox.

    uniform:a,b      lambda ~ U[a, b)
    loguniform:a,b   log lambda ~ U[log a, log b)
    lognormal:m,s    log lambda ~ N(m, s^2)
    """
    if distribution not in SPECTRUM_DISTRIBUTIONS:
        raise ValueError(f"unknown spectrum distribution {distribution!r}; allowed: {', '.join(SPECTRUM_DISTRIBUTIONS)}")
    u, z = rng.spectrum_draws(trajectories, dim, seed, dtype)
    a, b = spectrum_parameters(distribution, params)  # float64, rounded to dtype as they enter
    if distribution == "uniform":
        return a + b * u
    import torch
    if distribution == "loguniform":
        return torch.exp(a + b * u)
    return torch.exp(a + b * z)

