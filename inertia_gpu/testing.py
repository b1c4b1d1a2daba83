"""The conformance matrix: every ensemble backend against the reference, case by case.

A case is one point of problem x integrator x schedule x noise model x dtype
(`full_matrix`), at an odd dimension and an odd trajectory count, run over two
windows (a resumed run) with an irregular record step. `compare` runs a backend
and the reference (`TorchEnsemble`) on the same case and checks states, I_0,
first passage and the per-group partial sums, with outputs poisoned (NaN) so an
element a backend fails to write shows up. `covering_matrix` is a small design
that still holds every pair of factor values (for slow backends, e.g. Triton
under its interpreter); the CUDA host build and numba run the full product.

Backends here: "numba", "triton" (a GPU, or the interpreter), "cupy" (a GPU),
and "cuda-host": kernels/cuda/ensemble.cu compiled for the host with g++, run
one trajectory at a time (`HostCudaEnsemble`), which checks the CUDA kernel's
arithmetic without a GPU. Used by tests/test_conformance.py and
benchmarks/gpu_check.py.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .backends import base
from .backends.base import ChunkState, EnsembleBackend, n_groups, record_rows, recorded_in_window
from .config import SimulationConfig

PROBLEMS = ("quadratic", "drawn", "double-well", "rosenbrock")  # "drawn": quadratic with per-trajectory spectra
INTEGRATORS = ("heavy-ball", "euler", "leapfrog", "baoab")
SCHEDULES = ("constant", "nesterov:3")
NOISES = ("additive", "temperature", "loss-scaled", "none")
DTYPES = ("float32", "float64")
FACTORS = (PROBLEMS, INTEGRATORS, SCHEDULES, NOISES, DTYPES)

START, COUNT, STEPS = 64, 67, 13  # odd count: two groups, the second short
WINDOWS = ((0, 6), (6, 13))  # a resumed run, cut off the record grid
TOLERANCE = {"float32": 3e-5, "float64": 1e-10}  # relative to each quantity's scale
# ledger sums (columns 6..8) per group, relative to (kept trajectories x the run's energy scale)
LEDGER_TOLERANCE = {"float32": 3e-5, "float64": 1e-12}


@dataclass(frozen=True)
class Case:
    problem: str
    integrator: str
    schedule: str
    noise: str
    dtype: str

    @property
    def label(self) -> str:
        return "/".join((self.problem, self.integrator, self.schedule, self.noise, self.dtype))

    def config(self, device: str = "cpu", seed: int = 2026) -> SimulationConfig:
        """A small, stable configuration of this case (odd dimension, irregular record steps)."""
        opts = dict(integrator=self.integrator, momentum_schedule=self.schedule, dtype=self.dtype, device=device,
                    trajectories=START + COUNT, steps=STEPS, record_every=4, seed=seed, lr=0.05, momentum=0.8,
                    dt=0.1, damping=0.5, init_velocity_std=0.5, replicates=1)
        if self.problem == "quadratic":
            opts.update(condition=10.0, dim=3)
        elif self.problem == "drawn":
            opts.update(spectrum_distribution="lognormal:0,0.5", dim=3)
        elif self.problem == "double-well":
            opts.update(problem="double-well", dim=3)
        else:
            opts.update(problem="rosenbrock", dim=3, lr=0.001, dt=0.01, init_theta_std=0.3, init_velocity_std=0.01)
        if self.noise == "temperature":
            opts.update(noise_model="temperature", temperature=0.3)
        elif self.noise != "none":
            opts.update(noise_model=self.noise, noise=0.3)
        return SimulationConfig(**opts).validate()


def full_matrix() -> list[Case]:
    return [Case(*values) for values in itertools.product(*FACTORS)]


def covering_matrix() -> list[Case]:
    """A deterministic pairwise covering design: every pair of values of two factors occurs in some case."""
    uncovered = {(i, a, j, b) for i, j in itertools.combinations(range(len(FACTORS)), 2)
                 for a in FACTORS[i] for b in FACTORS[j]}
    cases = []
    candidates = list(itertools.product(*FACTORS))
    while uncovered:
        best = max(candidates, key=lambda c: sum((i, c[i], j, c[j]) in uncovered
                                                 for i, j in itertools.combinations(range(len(FACTORS)), 2)))
        uncovered -= {(i, best[i], j, best[j]) for i, j in itertools.combinations(range(len(FACTORS)), 2)}
        cases.append(Case(*best))
    return cases


# --- comparing a backend with the reference --------------------------------------------------

def _state_map(state: ChunkState, fn) -> ChunkState:
    """`fn` applied to every tensor of the state."""
    return ChunkState(*(fn(t) for t in (state.theta, state.momentum, state.inertia0,
                                                                state.first_passage, state.ledger)))


def _run_windows(backend: EnsembleBackend, config: SimulationConfig):
    state, sums = None, []
    for begin, end in WINDOWS:
        state, partial = backend.run(config, START, COUNT, begin, end, state)
        sums.append(partial.detach().cpu())
        state = _state_map(state, lambda t: t.detach().cpu().clone())
        if end != WINDOWS[-1][1]:  # the next window starts from this state on the backend's device
            dev = torch.device(config.device)
            state = _state_map(state, lambda t: t.to(dev))
    return state, torch.cat(sums)


def _max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| over the largest |want| (per last axis), NaN when got has NaN where want is finite."""
    got, want = got.double(), want.double()
    if not torch.equal(torch.isnan(got), torch.isnan(want)):
        return math.nan
    fin = torch.isfinite(want)
    if not fin.any():
        return 0.0
    scale = want.where(fin, torch.zeros_like(want)).abs().amax().clamp(min=1e-300)
    return float(((got - want).abs().where(fin, torch.zeros_like(want))).amax() / scale)


def compare(backend: EnsembleBackend, case: Case, device: str = "cpu") -> dict:
    """Run `backend` and the reference on `case`; returns {case, status ("ok"/"fail"), errors, message}."""
    from .backends.torch_ref import TorchEnsemble
    config = case.config(device)
    ref_state, ref_sums = _run_windows(TorchEnsemble(), case.config("cpu"))
    state, sums = _run_windows(backend, config)
    tol = TOLERANCE[case.dtype]
    errors = {name: _max_rel(getattr(state, name), getattr(ref_state, name))
              for name in ("theta", "momentum", "inertia0")}
    problems = []
    if sums.shape != ref_sums.shape:
        problems.append(f"partial sums shape {tuple(sums.shape)} != {tuple(ref_sums.shape)}")
    else:
        if not torch.equal(sums[..., 0], ref_sums[..., 0]):
            problems.append("kept counts differ")
        q = base.N_QUANTITIES
        got, want = sums[..., :q], ref_sums[..., :q]
        scale = want.abs().amax(dim=1, keepdim=True).clamp(min=1e-300)
        errors["sums"] = float(((got - want).abs() / scale).nan_to_num(math.inf).amax()) if got.numel() else 0.0
        if sums.shape[-1] == base.N_COLUMNS:
            errors["ledger"] = _ledger_error(sums, ref_sums, config)
            if not errors["ledger"] <= LEDGER_TOLERANCE[case.dtype]:
                problems.append(f"ledger sums: error {errors['ledger']:.3g} of the energy scale > "
                                f"{LEDGER_TOLERANCE[case.dtype]:g}")
    errors["ledger_state"] = _max_rel(state.ledger, ref_state.ledger)
    if not errors["ledger_state"] <= tol:
        problems.append(f"ledger state: relative error {errors['ledger_state']:.3g} > {tol:g}")
    errors["first_passage_mismatch"] = float((state.first_passage.cpu() != ref_state.first_passage).any(dim=1)
                                             .double().mean())
    for name in ("theta", "momentum", "inertia0"):
        if not errors[name] <= tol:
            problems.append(f"{name}: relative error {errors[name]:.3g} > {tol:g}")
    if "sums" in errors and not errors["sums"] <= 4 * tol:
        problems.append(f"sums: relative error {errors['sums']:.3g} > {4 * tol:g}")
    if errors["first_passage_mismatch"] > 0.02:
        problems.append(f"first passage differs for {errors['first_passage_mismatch']:.1%} of trajectories")
    return {"case": case.label, "status": "fail" if problems else "ok", "errors": errors,
            "tolerance": tol, "message": "; ".join(problems)}


def _ledger_error(sums: torch.Tensor, ref_sums: torch.Tensor, config: SimulationConfig) -> float:
    """max |ledger column - reference| per group over (kept trajectories x the run's energy scale).

    The ledger terms are sums of energies of the size of the energy scale (initial inertia plus what
    the noise can inject); a relative error per column would blow up where a column is ~0 by
    cancellation (W of a nearly conservative step)."""
    from .resolution import energy_scale
    cols = slice(base.N_QUANTITIES, base.N_COLUMNS)
    unit = ref_sums[..., :1].clamp(min=1.0) * energy_scale(config)
    diff = (sums[..., cols] - ref_sums[..., cols]).abs() / unit
    return float(diff.nan_to_num(math.inf).amax()) if diff.numel() else 0.0


# --- the backends -------------------------------------------------------------------------------

def backend_here(name: str, device: str = "cpu") -> EnsembleBackend | str:
    """The backend `name` ready to compare (outputs poisoned), or one line saying why it cannot run here."""
    probe = Case("quadratic", "heavy-ball", "constant", "additive", "float32").config(device)
    if name == "cuda-host":
        reason = HostCudaEnsemble.unavailable_reason(probe)
        return reason if reason else HostCudaEnsemble()
    from . import backends
    reason = backends.unavailable_reason(name, probe)
    if reason is not None:
        return reason
    cls = backends.backend_class(name)
    if name in ("triton", "cupy"):
        return cls(poison=True)
    return cls()


HOST_MAIN = r"""
#include "ensemble.cu"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

struct HostRecorder {
    std::vector<double> *out;  // [R][count][8]: kept, I, K, L, S, D, Q, W (the ledger's 0 without IG_LEDGER)
    long long count, t;
    void operator()(long long r, bool kept, double I, double K, double L, double S, double D, double Q, double W) {
        double *row = out->data() + (r * count + t) * 8;
        row[0] = kept ? 1.0 : 0.0; row[1] = I; row[2] = K; row[3] = L; row[4] = S;
        row[5] = IG_LEDGER ? D : 0.0; row[6] = IG_LEDGER ? Q : 0.0; row[7] = IG_LEDGER ? W : 0.0;
    }
};

static double rd() { double x; if (scanf("%lf", &x) != 1) exit(3); return x; }
static long long ri() { long long x; if (scanf("%lld", &x) != 1) exit(3); return x; }

int main() {
    IgParams P;
    long long n_const = ri(), n_table = ri();
    std::vector<ig_real> consts(n_const), table(n_table);
    for (auto &x : consts) x = (ig_real)rd();
    for (auto &x : table) x = (ig_real)rd();
    P.consts = consts.data();
    P.table = table.data();
    P.table_stride = ri();
    P.half_lr64 = rd(); P.shadow64 = rd(); P.diverge_above = rd();
    P.k0 = (ig_u32)ri(); P.k1 = (ig_u32)ri();
    long long start = ri(), count = ri();
    P.step_begin = ri(); P.step_end = ri();
    std::vector<int> rows(P.step_end - P.step_begin + 1);
    for (auto &x : rows) x = (int)ri();
    P.record_row = rows.data();
    P.lam_stride = ri();
    long long n_lam = ri(), records = ri(), init = ri();
    std::vector<ig_real> lam(n_lam + 1), th(count * IG_DIM), mo(count * IG_DIM);
    std::vector<double> i0(count), ledger(count * 2);
    std::vector<int> fp(count * 3);
    for (long long i = 0; i < n_lam; ++i) lam[i] = (ig_real)rd();
    P.lam = lam.data();
    if (!init) {
        for (auto &x : th) x = (ig_real)rd();
        for (auto &x : mo) x = (ig_real)rd();
        for (auto &x : i0) x = rd();
        for (auto &x : fp) x = (int)ri();
        for (auto &x : ledger) x = rd();
    }
    // poisoned outputs: an element the kernel does not write stays NaN (or -7)
    std::vector<ig_real> tho(count * IG_DIM, (ig_real)NAN), moo(count * IG_DIM, (ig_real)NAN);
    std::vector<ig_real> work(3 * IG_DIM * count);
    std::vector<double> i0o(count, NAN), ledgero(count * 2, NAN), out(records * count * 8 + 1, NAN);
    std::vector<int> fpo(count * 3, -7);
    for (long long t = 0; t < count; ++t) {
        HostRecorder rec{&out, count, t};
        ig_run_trajectory(P, (ig_u32)(start + t), t, true, init ? nullptr : th.data(), mo.data(), i0.data(), fp.data(),
                          ledger.data(), tho.data(), moo.data(), i0o.data(), fpo.data(), ledgero.data(), work.data(),
                          count, rec);
    }
    for (long long i = 0; i < records * count * 8; ++i) printf("%.17e\n", out[i]);
    for (auto x : tho) printf("%.17e\n", (double)x);
    for (auto x : moo) printf("%.17e\n", (double)x);
    for (auto x : i0o) printf("%.17e\n", x);
    for (auto x : fpo) printf("%d\n", x);
    for (auto x : ledgero) printf("%.17e\n", x);
    return 0;
}
"""


def _floats(values) -> str:
    return " ".join(repr(float(x)) for x in values)


class HostCudaEnsemble(EnsembleBackend):
    """kernels/cuda/ensemble.cu's per-trajectory code compiled for the host (g++), behind EnsembleBackend.

    Receives exactly what CupyEnsemble passes (coefficient table, record-row table, observables'
    float64 constants); returns group sums formed from its per-trajectory float64 observables
    (a trajectory the kernel did not keep is left out). One executable per set of -D switches,
    cached under `build_dir`. reg_max=0 selects the work-buffer path (state in global memory).
    """

    name = "cuda-host"
    records_any_steps = True  # the kernel reads the record-row table

    def __init__(self, build_dir: str | os.PathLike | None = None, reg_max: int | None = None):
        self.build_dir = Path(build_dir or Path(tempfile.gettempdir()) / "inertia-gpu-host-build")
        self.reg_max = reg_max

    @classmethod
    def unavailable_reason(cls, config: SimulationConfig) -> str | None:
        if shutil.which("g++") is None and shutil.which("c++") is None:
            return "cuda-host: no host C++ compiler (g++) found"
        return None

    def executable(self, config: SimulationConfig) -> Path:
        from .backends import cupy_backend
        defines = cupy_backend.ensemble_defines(config)
        if self.reg_max is not None:
            defines = [d for d in defines if not d.startswith("-DIG_REG_MAX")] + [f"-DIG_REG_MAX={self.reg_max}"]
        folder = Path(cupy_backend.kernel_dir())
        sources = "".join((folder / n).read_text() for n in ("ensemble.cu", "philox.cuh")) + HOST_MAIN
        key = hashlib.sha256((sources + " ".join(defines)).encode()).hexdigest()[:16]
        exe = self.build_dir / f"ensemble-{key}"
        if not exe.exists():
            self.build_dir.mkdir(parents=True, exist_ok=True)
            src = self.build_dir / f"ensemble-{key}-{os.getpid()}.cpp"
            src.write_text(HOST_MAIN)
            tmp = exe.with_name(f"{exe.name}.{os.getpid()}")
            cxx = shutil.which("g++") or shutil.which("c++")
            cmd = [cxx, "-std=c++17", "-O0", "-Wno-unknown-pragmas", f"-I{folder}", *defines, str(src), "-o", str(tmp)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"host build failed: {' '.join(cmd)}\n{proc.stderr[-4000:]}")
            tmp.replace(exe)  # atomic: parallel builders of one variant agree
            src.unlink()
        return exe

    def run(self, config: SimulationConfig, start: int, count: int, step_begin: int, step_end: int,
            state: ChunkState | None):
        obs, new_state = self.observables(config, start, count, step_begin, step_end, state)
        return new_state, sums_from_observables(obs)

    def observables(self, config, start, count, step_begin, step_end, state):
        """(float64 [R, count, 8] = kept, I, K, L, S, D, Q, W per trajectory, ChunkState with its ledger)."""
        from .backends import cupy_backend
        from .coefficients import N_STEP, Obs, coefficients
        from .problems import drawn_spectrum
        dim, dtype = config.dim, torch.float64 if config.dtype == "float64" else torch.float32
        records = len(recorded_in_window(config, step_begin, step_end))
        if config.problem == "quadratic" and config.distribution is not None:
            lam = drawn_spectrum(*config.distribution, torch.arange(start, start + count), dim, config.seed,
                                 dtype).reshape(-1)
            stride = dim
        elif config.problem == "quadratic":
            lam, stride = torch.tensor(config.spectrum, dtype=dtype), 0
        else:
            lam, stride = torch.zeros(0), 0
        coef = coefficients(config, step_begin, step_end)
        table = coef.rows.reshape(-1)
        parts = [f"{len(coef.constants)} {table.numel()}", _floats(coef.constants.tolist()), _floats(table.tolist())]
        tail = [0 if coef.constant_schedule else N_STEP, float(coef.observe[Obs.HALF_LR]),
                float(coef.observe[Obs.SHADOW]), float(getattr(config, "diverge_above", math.inf)),
                config.seed & 0xFFFFFFFF, config.seed >> 32, start, count, step_begin, step_end]
        parts.append(" ".join(repr(v) if isinstance(v, float) else str(v) for v in tail))
        parts.append(" ".join(str(int(r)) for r in record_rows(config, step_begin, step_end).tolist()))
        parts.append(f"{stride} {lam.numel()} {records} {1 if state is None else 0}")
        parts.append(_floats(lam.double().tolist()))
        if state is not None:
            for t in (state.theta, state.momentum, state.inertia0):
                parts.append(_floats(t.double().reshape(-1).tolist()))
            parts.append(" ".join(str(int(x)) for x in state.first_passage.reshape(-1).tolist()))
            parts.append(_floats(cupy_backend.ledger_state(config, state, "cpu").reshape(-1).tolist()))
        proc = subprocess.run([str(self.executable(config))], input="\n".join(parts) + "\n", capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"host build exited with {proc.returncode}: {proc.stderr[-2000:]}")
        vals = np.array(proc.stdout.split(), dtype=np.float64)
        obs_n = records * count * 8
        obs, rest = vals[:obs_n].reshape(records, count, 8), vals[obs_n:]
        np_dtype = np.float64 if config.dtype == "float64" else np.float32
        cut = np.cumsum([count * dim, count * dim, count, count * len(base.FRACTIONS)])
        theta, mom, i0, fp, ledger = np.split(rest, cut)
        new_state = ChunkState(torch.from_numpy(theta.reshape(count, dim).astype(np_dtype)),
                               torch.from_numpy(mom.reshape(count, dim).astype(np_dtype)),
                               torch.from_numpy(i0.copy()),
                               torch.from_numpy(fp.astype(np.int32).reshape(count, len(base.FRACTIONS))),
                               torch.from_numpy(ledger.reshape(count, 2).copy()))
        return obs, new_state


def sums_from_observables(obs: np.ndarray) -> torch.Tensor:
    """float64 [R, n_groups, N_COLUMNS] group sums of per-trajectory (kept, I, K, L, S, D, Q, W) rows."""
    from .backends.torch_ref import group_sums
    t = torch.from_numpy(np.ascontiguousarray(obs))
    if t.shape[-1] != 8:
        raise ValueError(f"observable rows have {t.shape[-1]} fields, expected 8 (kept, I, K, L, S, D, Q, W)")
    if t.shape[0] == 0:
        return torch.zeros(0, n_groups(t.shape[1]), base.N_COLUMNS, dtype=torch.float64)
    kept = t[..., 0] > 0  # NaN (never written) is not kept
    rows = [group_sums(t[r, :, 1], t[r, :, 2], t[r, :, 3], t[r, :, 4], kept[r], (t[r, :, 5], t[r, :, 6], t[r, :, 7]))
            for r in range(t.shape[0])]
    return torch.stack(rows)


def run_matrix(backend: EnsembleBackend, cases: list[Case], device: str = "cpu", workers: int = 1) -> list[dict]:
    """compare() over `cases`; workers > 1 runs cases in threads (the host build compiles in parallel)."""
    if workers <= 1:
        return [compare(backend, c, device) for c in cases]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda c: compare(backend, c, device), cases))


__all__ = ["Case", "HostCudaEnsemble", "backend_here", "compare", "covering_matrix", "full_matrix", "run_matrix",
           "sums_from_observables"]
