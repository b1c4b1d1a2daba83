"""The reference dynamics: what every backend must compute, in plain PyTorch.

Readable first, fast second. Each function is one line of
docs/CONVENTIONS.md: the per-step maps of every integrator, the noise
scale of every noise model, the initial state and the recorded
quantities. Runs on any device in float32 or float64; the fast paths are
tested against it.
"""
from __future__ import annotations

import math

import torch

from . import rng
from .config import SimulationConfig
from .problems import Problem, drawn_spectrum, make_problem
from .spec import Integrator, NoiseModel, switches, torch_dtype

SWEEPABLE = ("momentum", "damping", "lr", "noise", "temperature")


def sweep_overrides(config: SimulationConfig, trajectories: torch.Tensor) -> dict:
    """Per-trajectory values of a swept option (`inertia-gpu sweep`), {} for an ordinary run.

    config.extra["sweep"] = {"name": option, "values": [v_0, ...], "block": B}: trajectory t
    runs with option = values[t // B] (B trajectories, whole replicates, per configuration).
    """
    spec = config.extra.get("sweep") if config.extra else None
    if not spec:
        return {}
    values = torch.tensor(spec["values"], dtype=torch_dtype(config.dtype), device=trajectories.device)
    return {spec["name"]: values[trajectories // spec["block"]]}


class Model:
    """A config turned into tensors: the problem, its eigenvalues, the per-step scalars.

    overrides: {option: tensor [n]} per-trajectory values of a scalar option (a sweep batches
    many configurations into one launch); `param` hands out either.
    """

    def __init__(self, config: SimulationConfig, overrides: dict | None = None):
        self.config = config
        self.problem: Problem = make_problem(config.problem, config.dim)
        self.dtype = torch_dtype(config.dtype)
        self.switches = switches(config)
        self.device = torch.device(config.device)
        self.overrides = overrides or {}

    def param(self, name: str, per_coordinate: bool = True):
        """config.<name>, or its per-trajectory values: [n, 1] beside [n, dim] state, [n] beside [n] sums."""
        value = self.overrides.get(name)
        if value is None:
            return getattr(self.config, name)
        return value[:, None] if per_coordinate else value

    # --- the quadratic's eigenvalues -------------------------------------------
    def eigenvalues(self, trajectories: torch.Tensor) -> torch.Tensor | None:
        """[n, dim] per trajectory (drawn) or [1, dim] shared; None for non-quadratics."""
        cfg = self.config
        if cfg.problem != "quadratic":
            return None
        if cfg.distribution is not None:
            name, params = cfg.distribution
            return drawn_spectrum(name, params, trajectories, cfg.dim, cfg.seed, self.dtype)
        return torch.tensor(cfg.spectrum, dtype=self.dtype, device=self.device)[None, :]

    # --- schedules and noise ---------------------------------------------------
    def momentum(self, n: int) -> float | torch.Tensor:
        """mu_n of heavy ball, computed in the working dtype (n / (n + r) for nesterov:r)."""
        r = self.config.nesterov_r
        if r is None:
            return self.param("momentum")
        n_t = torch.tensor(float(n), dtype=self.dtype)
        return n_t / (n_t + torch.tensor(r, dtype=self.dtype))

    def damping(self, n: int) -> float | torch.Tensor:
        """gamma_n of the continuous integrators: constant, or (1 - mu_n) / h for nesterov:r."""
        cfg = self.config
        if cfg.nesterov_r is None:
            return self.param("damping")
        return (1.0 - self.momentum(n)) / cfg.dt

    def noise_std(self, loss: torch.Tensor, friction: float | torch.Tensor) -> torch.Tensor | float:
        """Gradient-noise std s (heavy ball) or sigma (continuous) for this step.

        friction: 1 - mu_n / lr (heavy ball, so that s^2 = 2(1-mu)T/lr) or gamma (continuous,
        sigma^2 = 2 gamma T).
        """
        cfg = self.config
        if self.switches.noise_model == NoiseModel.ADDITIVE:
            return self.param("noise")
        if self.switches.noise_model == NoiseModel.TEMPERATURE:
            return torch.sqrt(torch.as_tensor(2.0 * friction * self.param("temperature"), dtype=self.dtype))
        return self.param("noise") * torch.sqrt(torch.clamp(loss, min=0.0))[:, None]  # loss-scaled

    # --- initial state -----------------------------------------------------------
    def initial_state(self, trajectories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta_0 ~ N(0, init_theta_std^2), v_0 ~ N(0, init_velocity_std^2); heavy ball stores b_0 = -v_0/lr."""
        cfg = self.config
        z_theta, z_v = rng.init_normals(trajectories, cfg.dim, cfg.seed, self.dtype)
        theta = cfg.init_theta_std * z_theta
        v = cfg.init_velocity_std * z_v
        if cfg.continuous:
            return theta, v
        return theta, -v / self.param("lr")

    # --- one step ----------------------------------------------------------------
    def step(self, theta, mom, lam, n: int, xi):
        """Advance state n -> n + 1 with standard normals xi [n_traj, dim]."""
        cfg = self.config
        grad, loss = self.problem.grad, self.problem.loss
        integrator = self.switches.integrator
        if integrator == Integrator.HEAVY_BALL:
            mu, lr = self.momentum(n), self.param("lr")
            s = self.noise_std(loss(theta, lam), (1.0 - mu) / lr)
            g = grad(theta, lam) + s * xi
            mom = mu * mom + g
            return theta - lr * mom, mom
        h = cfg.dt
        gamma = self.damping(n)
        if integrator == Integrator.EULER:
            sigma = self.noise_std(loss(theta, lam), gamma)
            g = grad(theta, lam)
            return theta + h * mom, mom - h * g - (h * gamma) * mom + (sigma * math.sqrt(h)) * xi
        if integrator == Integrator.LEAPFROG:  # B A B O
            mom = mom - (0.5 * h) * grad(theta, lam)
            theta = theta + h * mom
            mom = mom - (0.5 * h) * grad(theta, lam)
            return theta, self.ou_step(mom, theta, lam, gamma, xi)
        # baoab: B A O A B
        mom = mom - (0.5 * h) * grad(theta, lam)
        theta = theta + (0.5 * h) * mom
        mom = self.ou_step(mom, theta, lam, gamma, xi)
        theta = theta + (0.5 * h) * mom
        return theta, mom - (0.5 * h) * grad(theta, lam)

    def ou_step(self, v, theta, lam, gamma, xi):
        """Exact Ornstein-Uhlenbeck step v <- c1 v + c2 xi over time h."""
        h = self.config.dt
        gamma = torch.as_tensor(gamma, dtype=self.dtype)
        c1 = torch.exp(-gamma * h)
        # (1 - e^{-2 gamma h}) / (2 gamma), tending to h as gamma -> 0
        var_factor = torch.where(gamma > 0, -torch.expm1(-2.0 * gamma * h) / (2.0 * torch.clamp(gamma, min=1e-300)),
                                 torch.as_tensor(h, dtype=self.dtype))
        sigma = self.noise_std(self.problem.loss(theta, lam), gamma)
        return c1 * v + (sigma * torch.sqrt(var_factor)) * xi

    # --- what is recorded --------------------------------------------------------
    def observe(self, theta, mom, lam):
        """(inertia, kinetic, loss, shadow_inertia), each [n_traj]."""
        cfg = self.config
        loss = self.problem.loss(theta, lam)
        g = self.problem.grad(theta, lam)
        if self.switches.integrator == Integrator.HEAVY_BALL:
            lr = self.param("lr", per_coordinate=False)
            kinetic = 0.5 * lr * (mom * mom).sum(dim=-1)
            inertia = kinetic + loss
            shadow = inertia + 0.5 * lr * (mom * g).sum(dim=-1)
        else:
            kinetic = 0.5 * (mom * mom).sum(dim=-1)
            inertia = kinetic + loss
            shadow = inertia - (cfg.dt ** 2 / 8.0) * (g * g).sum(dim=-1)
        return inertia, kinetic, loss, shadow
