"""The reference dynamics: what every backend must compute, in plain PyTorch.

Readable first, fast second. Each piece is one line of docs/CONVENTIONS.md:
the integrators as words over the primitive maps (`WORDS`), the initial
state and the recorded quantities. Every scalar it multiplies by comes from
`inertia_gpu.coefficients` (as every kernel's does), so rounding agrees
across backends by construction. Runs on any device in float32 or float64;
the fast paths are tested against it.
"""
from __future__ import annotations

import functools

import torch

from . import rng
from .coefficients import Coefficients, Const, Obs, Step, coefficients
from .config import SimulationConfig
from .problems import Problem, drawn_spectrum, make_problem
from .spec import Integrator, NoiseModel, switches, torch_dtype

SWEEPABLE = ("momentum", "damping", "lr", "noise", "temperature")

# Integrators as words over the primitive maps of one step n -> n + 1 (read left to right):
#   B  half kick        v <- v - (h/2) grad L(theta)
#   A  drift            theta <- theta + (h / k) v, k = how many A the word has (h or h/2)
#   O  exact Ornstein-Uhlenbeck over h   v <- c1 v + (XI) xi   (coefficients.Step)
#   E  explicit Euler   theta' = theta + h v,  v' = v - h grad L(theta) - (h gamma) v + (XI) xi
#   M  heavy ball       b <- mu b + (grad L(theta) + s xi),  theta <- theta - lr b
# Kernels unroll these words; docs/CONVENTIONS.md spells each one out.
WORDS = {Integrator.HEAVY_BALL: "M", Integrator.EULER: "E", Integrator.LEAPFROG: "BABO", Integrator.BAOAB: "BAOAB"}


def sweep_overrides(config: SimulationConfig, trajectories: torch.Tensor) -> dict:
    """Per-trajectory values of a swept option (`inertia-gpu sweep`), {} for an ordinary run.

    config.extra["sweep"] = {"name": option, "values": [v_0, ...], "block": B}: trajectory t
    runs with option = values[t // B] (B trajectories, whole replicates, per configuration).
    Values are float64 (exact); `coefficients` rounds what the dynamics multiplies by.
    """
    spec = config.extra.get("sweep") if config.extra else None
    if not spec:
        return {}
    values = torch.tensor(spec["values"], dtype=torch.float64)
    return {spec["name"]: values[trajectories.cpu() // spec["block"]]}


class Model:
    """A config turned into tensors: the problem, its eigenvalues, the word and the coefficient table.

    overrides: {option: tensor [n]} per-trajectory values of a scalar option (a sweep batches
    many configurations into one launch); the coefficients then carry a trajectory axis.
    window: the steps [step_begin, step_end) whose per-step scalars are tabulated.
    """

    def __init__(self, config: SimulationConfig, overrides: dict | None = None,
                 window: tuple[int, int] | None = None):
        self.config = config
        self.problem: Problem = make_problem(config.problem, config.dim)
        self.dtype = torch_dtype(config.dtype)
        self.device = torch.device(config.device)
        self.switches = switches(config)
        self.word = WORDS[self.switches.integrator]
        self._window = window if window is not None else (0, config.steps)
        self._overrides = overrides

    @functools.cached_property
    def coef(self) -> Coefficients:
        """The coefficient table of the window (built on first use: eigenvalues() alone needs none)."""
        return coefficients(self.config, *self._window, overrides=self._overrides)

    @functools.cached_property
    def _const(self) -> torch.Tensor:
        return self._on_device(self.coef.constants, self.dtype)

    @functools.cached_property
    def _rows(self) -> torch.Tensor:
        return self._on_device(self.coef.rows, self.dtype)

    @functools.cached_property
    def _observe(self) -> torch.Tensor:
        return self._on_device(self.coef.observe, torch.float64)

    def _on_device(self, values: torch.Tensor, dtype) -> torch.Tensor:
        """[k] -> [k] scalars; [k, n] (per trajectory) -> [k, n, 1] so each entry broadcasts over [n, dim]."""
        values = values.to(device=self.device, dtype=dtype)
        per_trajectory = self.coef.constants.dim() == 2
        return values[..., None] if per_trajectory else values

    def const(self, index: Const) -> torch.Tensor:
        return self._const[index]

    def scalar(self, n: int, column: Step) -> torch.Tensor:
        """Column `column` of step n's row in the working dtype (scalar, or [n, 1] per trajectory)."""
        coef = self.coef
        if not coef.step_begin <= n < coef.step_end:
            raise IndexError(f"step {n} outside the tabulated window [{coef.step_begin}, {coef.step_end})")
        return self._rows[0 if coef.constant_schedule else n - coef.step_begin, column]

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

    # --- initial state -----------------------------------------------------------
    def initial_state(self, trajectories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """theta_0 ~ N(0, init_theta_std^2), v_0 ~ N(0, init_velocity_std^2); heavy ball stores b_0 = -v_0/lr."""
        cfg = self.config
        z_theta, z_v = rng.init_normals(trajectories, cfg.dim, cfg.seed, self.dtype)
        theta = self.const(Const.INIT_THETA_STD) * z_theta
        v = self.const(Const.INIT_VELOCITY_STD) * z_v
        if cfg.continuous:
            return theta, v
        return theta, -v / self.const(Const.LR)

    # --- one step: the word, letter by letter ----------------------------------------
    def step(self, theta, mom, lam, n: int, xi):
        """Advance state n -> n + 1 with standard normals xi [n_traj, dim]."""
        drifts = self.word.count("A")
        for letter in self.word:
            if letter == "B":
                mom = mom - self.const(Const.HALF_H) * self.problem.grad(theta, lam)
            elif letter == "A":
                theta = theta + self.const(Const.H if drifts == 1 else Const.HALF_H) * mom
            elif letter == "O":
                mom = self.scalar(n, Step.DECAY) * mom + self.xi_scale(theta, lam, n) * xi
            elif letter == "E":
                g = self.problem.grad(theta, lam)
                h = self.const(Const.H)
                noise = self.xi_scale(theta, lam, n) * xi
                theta, mom = theta + h * mom, mom - h * g - self.scalar(n, Step.DECAY) * mom + noise
            else:  # "M": heavy ball, torch.optim.SGD's convention
                g = self.problem.grad(theta, lam) + self.xi_scale(theta, lam, n) * xi
                mom = self.scalar(n, Step.DECAY) * mom + g
                theta = theta - self.const(Const.LR) * mom
        return theta, mom

    def xi_scale(self, theta, lam, n: int):
        """What multiplies xi at step n: the table's XI, or (noise sqrt(max(L, 0))) * SPREAD (loss-scaled)."""
        xi = self.scalar(n, Step.XI)
        if self.switches.noise_model != NoiseModel.LOSS_SCALED:
            return xi
        root = torch.sqrt(torch.clamp(self.problem.loss(theta, lam), min=0.0))[:, None]
        return (xi * root) * self.scalar(n, Step.SPREAD)

    # --- what is recorded --------------------------------------------------------
    def observe(self, theta, mom, lam):
        """(inertia, kinetic, loss, shadow_inertia), each float64 [n_traj], formed from the state in float64.

        float64 keeps float32 runs right where their products would be subnormal (deep decay)."""
        theta, mom = theta.double(), mom.double()
        lam = None if lam is None else lam.double()
        loss = self.problem.loss(theta, lam)
        g = self.problem.grad(theta, lam)
        observe = self._observe
        if self.switches.integrator == Integrator.HEAVY_BALL:
            half_lr = observe[Obs.HALF_LR]
            half_lr = half_lr[:, 0] if half_lr.dim() else half_lr
            kinetic = half_lr * (mom * mom).sum(dim=-1)
            inertia = kinetic + loss
            shadow = inertia + half_lr * (mom * g).sum(dim=-1)
        else:
            kinetic = 0.5 * (mom * mom).sum(dim=-1)
            inertia = kinetic + loss
            shadow = inertia - observe[Obs.SHADOW].reshape(-1) * (g * g).sum(dim=-1)
        return inertia, kinetic, loss, shadow
