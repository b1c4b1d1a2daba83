"""CUDA C sources of the CuPy backend, checked without a GPU where possible.

(a) every .cu compiles to PTX for sm_90 with the switches the launcher passes (needs nvcc);
(b) philox.cuh compiled for the host equals inertia_gpu.rng: uint32 outputs bit for bit,
    normals to float rounding, counter helpers word for word (needs g++);
(c) ensemble.cu's per-trajectory code compiled for the host reproduces the torch reference
    backend (group sums, the ledger columns and state included, final state, first passage) in
    float64, whole windows and resumed ones, and in float32 to its rounding;
(d) on a GPU: CupyEnsemble against TorchEnsemble, cupy_sgd_step against the foreach step;
(f) sgd.cu's per-quad step compiled for the host against the foreach step: parameters, buffers and
    the three sums (the ledger's injected-noise term included).
Build artifacts go under pytest's tmp_path.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from inertia_gpu import rng
from inertia_gpu.backends import cupy_backend
from inertia_gpu.backends.base import N_COLUMNS, N_QUANTITIES, ChunkState, n_groups, recorded_in_window
from inertia_gpu.optim import cuda_step
from inertia_gpu.config import SimulationConfig
from inertia_gpu.resolution import energy_scale
from inertia_gpu.testing import HostCudaEnsemble

NVCC = shutil.which("nvcc")
CXX = shutil.which("g++") or shutil.which("c++")
KERNEL_DIR = Path(cupy_backend.kernel_dir() or "")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
needs_cxx = pytest.mark.skipif(CXX is None, reason="no host C++ compiler")


def _run(cmd, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


# Representative configurations: every integrator x problem, every noise model, both
# schedules and dtypes, per-trajectory spectra, and the work-buffer path (dim > REG_MAX).
def _configs() -> list[SimulationConfig]:
    out = []
    noises = [("additive", 0.1, 0.0), ("temperature", 0.0, 0.5), ("loss-scaled", 0.2, 0.0), ("additive", 0.0, 0.0)]
    k = 0
    for integrator in ("heavy-ball", "leapfrog", "euler", "baoab"):
        for problem in ("quadratic", "double-well", "rosenbrock"):
            model, noise, temp = noises[k % 4]
            kw = dict(problem=problem, integrator=integrator, noise_model=model, noise=noise, temperature=temp,
                      damping=0.3, dtype=("float32", "float64")[k % 2],
                      momentum_schedule=("constant", "nesterov:3")[(k // 2) % 2])
            if problem == "quadratic":
                kw["spectrum_distribution" if k % 3 == 0 else "condition"] = "lognormal:0,0.5" if k % 3 == 0 else 10.0
            kw["dim"] = 3 if problem != "quadratic" or k % 3 != 0 else 2
            out.append(SimulationConfig(**kw).validate())
            k += 1
    out.append(SimulationConfig(problem="quadratic", dim=40, condition=100.0, integrator="baoab", damping=0.1,
                                noise=0.1, dtype="float32").validate())
    out.append(SimulationConfig(problem="quadratic", dim=3, integrator="heavy-ball", noise=0.1, ledger=False).validate())
    return out


# --- (a) PTX for sm_90 ---------------------------------------------------------------------

@needs_nvcc
def test_every_cu_compiles_to_ptx(tmp_path):
    assert KERNEL_DIR.is_dir()
    jobs = []
    for i, config in enumerate(_configs()):
        jobs.append((cupy_backend.ENSEMBLE_SOURCE, cupy_backend.ensemble_defines(config), f"ensemble_{i}.ptx"))
    jobs.append((cuda_step.SGD_SOURCE, [f"-DIG_SGD_BLOCK={cuda_step.SGD_BLOCK}"], "sgd.ptx"))
    assert {p.name for p in KERNEL_DIR.glob("*.cu")} <= {j[0] for j in jobs}, "a .cu file is not covered"

    def compile_one(job):
        source, defines, out = job
        _run([NVCC, "-ptx", "-arch=sm_90", "-std=c++17", f"-I{KERNEL_DIR}", *defines,
              str(KERNEL_DIR / source), "-o", str(tmp_path / out)])
        return (tmp_path / out).read_text()

    with ThreadPoolExecutor(8) as pool:
        ptxs = list(pool.map(compile_one, jobs))
    for (source, _, _), ptx in zip(jobs, ptxs):
        names = [cupy_backend.ENSEMBLE_KERNEL] if source == cupy_backend.ENSEMBLE_SOURCE \
            else list(cuda_step.SGD_KERNELS.values())
        for name in names:
            assert f".entry {name}(" in ptx, f"{name} missing from {source}"


# --- (b) Philox on the host ------------------------------------------------------------------

PHILOX_MAIN = r"""
#include "philox.cuh"
#include <stdio.h>
int main() {
    unsigned c0, c1, c2, c3, k0, k1;
    while (scanf("%u %u %u %u %u %u", &c0, &c1, &c2, &c3, &k0, &k1) == 6) {
        ig_u32x4 x = ig_philox4x32_10(c0, c1, c2, c3, k0, k1);
        float zf[4];
        double zd[4];
        ig_normals4<float>(c0, c1, c2, c3, k0, k1, zf);
        ig_normals4<double>(c0, c1, c2, c3, k0, k1, zd);
        printf("%u %u %u %u %.9e %.9e %.9e %.9e %.17e %.17e %.17e %.17e\n", x.x0, x.x1, x.x2, x.x3,
               zf[0], zf[1], zf[2], zf[3], zd[0], zd[1], zd[2], zd[3]);
    }
    // counter helpers
    unsigned long long e, step;
    unsigned t, p, traj, coord, tag;
    while (scanf(" o %llu %u %u", &e, &t, &p) == 3) {
        ig_counter c = ig_optimizer_counter(e, t, p);
        printf("o %u %u %u %u %d\n", c.c0, c.c1, c.c2, c.c3, ig_optimizer_lane(e));
    }
    while (scanf(" s %u %llu %u %u", &traj, &step, &coord, &tag) == 4) {
        ig_counter c = ig_ensemble_counter(traj, step, coord, tag);
        printf("s %u %u %u %u %d\n", c.c0, c.c1, c.c2, c.c3, ig_ensemble_lane(step));
    }
    return 0;
}
"""


def _build(tmp_path: Path, name: str, code: str, defines=()) -> Path:
    src = tmp_path / f"{name}.cpp"
    src.write_text(code)
    exe = tmp_path / name
    _run([CXX, "-std=c++17", "-O1", "-Wno-unknown-pragmas", f"-I{KERNEL_DIR}", *defines, str(src), "-o", str(exe), "-lm"])
    return exe


@needs_cxx
def test_host_philox_equals_reference(tmp_path):
    exe = _build(tmp_path, "philox", PHILOX_MAIN)
    g = np.random.default_rng(1234)
    n = 4000
    words = g.integers(0, 2 ** 32, size=(n, 6), dtype=np.uint64)
    keys = g.integers(0, 2 ** 32, size=(50, 2), dtype=np.uint64)
    words[:, 4:] = keys[np.arange(n) % 50]
    words[:4] = 0  # Random123 known answers: counter 0, key 0
    words[4:8] = 0xFFFFFFFF
    words[8:12, :4] = [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]
    words[8:12, 4:] = [0xA4093822, 0x299F31D0]
    words[12:20, 0] = [0, 1, 255, 256, 2 ** 31, 2 ** 32 - 256, 2 ** 32 - 1, 12345]  # edges of the 24-bit uniforms
    optimizer_queries = [(e, t, p) for e in (0, 1, 5, 2 ** 32 * 4 - 1, 2 ** 34, 2 ** 34 + 7, 2 ** 40 + 3, 2 ** 62)
                         for t, p in ((0, 0), (7, 3), (2 ** 32 - 1, 2 ** 32 - 1))]
    step_queries = [(tr, st, c, tag) for tr in (0, 2 ** 32 - 1) for st in (0, 3, 4, 2 ** 34 - 1)
                    for c in (0, 99) for tag in (0, 1, 2)]
    stdin = "\n".join(" ".join(str(int(v)) for v in row) for row in words)
    stdin += "\n" + "\n".join(f"o {e} {t} {p}" for e, t, p in optimizer_queries)
    stdin += "\n" + "\n".join(f"s {tr} {st} {c} {tag}" for tr, st, c, tag in step_queries) + "\n"
    lines = _run([str(exe)], input=stdin).splitlines()
    rows = [ln.split() for ln in lines if not ln.startswith(("o ", "s "))]
    assert len(rows) == n
    host_x = np.array([[int(v) for v in r[:4]] for r in rows], dtype=np.int64)
    host_f = np.array([[float(v) for v in r[4:8]] for r in rows])
    host_d = np.array([[float(v) for v in r[8:12]] for r in rows])

    w = torch.from_numpy(words.astype(np.int64))
    ref_x = torch.empty(n, 4, dtype=torch.int64)
    ref_f = torch.empty(n, 4, dtype=torch.float32)
    ref_d = torch.empty(n, 4, dtype=torch.float64)
    for k0, k1 in {(int(a), int(b)) for a, b in w[:, 4:].tolist()}:
        rows = (w[:, 4] == k0) & (w[:, 5] == k1)
        c = [w[rows, j] for j in range(4)]
        ref_x[rows] = torch.stack(rng.philox4x32(*c, k0, k1), dim=-1)
        seed = k0 | (k1 << 32)
        ref_f[rows] = rng.normals4(*c, seed, torch.float32)
        ref_d[rows] = rng.normals4(*c, seed, torch.float64)
    assert np.array_equal(host_x, ref_x.numpy()), "Philox outputs differ from inertia_gpu.rng"
    assert [f"{v:08x}" for v in host_x[0]] == ["6627e8d5", "e169c58d", "bc57ac4c", "9b00dbd8"]
    assert [f"{v:08x}" for v in host_x[4]] == ["408f276d", "41c83b0e", "a20bc7c6", "6d5451fd"]
    assert [f"{v:08x}" for v in host_x[8]] == ["d16cfe09", "94fdcceb", "5001e420", "24126ea1"]
    # normals: float64 to ~1e-15, float32 to ~1e-6 of the scale (sin/cos near zero: absolute)
    np.testing.assert_allclose(host_d, ref_d.numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(host_f, ref_f.numpy().astype(np.float64), rtol=2e-6, atol=2e-6)

    opt = [ln.split()[1:] for ln in lines if ln.startswith("o ")]
    for (e, t, p), got in zip(optimizer_queries, opt, strict=True):
        (c0, c1, c2, c3), lane = rng.optimizer_counter(torch.tensor(e), t, p)
        # the words Philox sees (rng.philox4x32 masks each to 32 bits)
        assert [int(v) for v in got] == [int(c) & rng.MASK32 for c in (c0, c1, c2, c3)] + [int(lane)], (e, t, p)
    ens = [ln.split()[1:] for ln in lines if ln.startswith("s ")]
    for (tr, st, c, tag), got in zip(step_queries, ens, strict=True):
        (c0, c1, c2, c3), lane = rng.ensemble_counter(torch.tensor(tr), torch.tensor(st), torch.tensor(c), tag)
        assert [int(v) for v in got] == [int(c0), int(c1), int(c2), int(c3), int(lane)], (tr, st, c, tag)


# --- (c) the ensemble step math on the host -----------------------------------------------------

HOST_CASES = [
    dict(problem="quadratic", condition=10.0, dim=3, integrator="heavy-ball", lr=0.3, momentum=0.8, noise=0.3),
    dict(problem="quadratic", condition=10.0, dim=2, integrator="heavy-ball", lr=0.2, momentum_schedule="nesterov:3",
         noise_model="temperature", temperature=0.5, init_velocity_std=0.5),
    dict(problem="quadratic", spectrum_distribution="lognormal:0,0.5", dim=3, integrator="leapfrog", dt=0.3,
         damping=0.4, noise_model="loss-scaled", noise=0.3),
    dict(problem="double-well", dim=2, integrator="euler", dt=0.1, damping=0.5, noise_model="temperature",
         temperature=0.3, init_velocity_std=0.7),
    dict(problem="rosenbrock", dim=3, integrator="baoab", dt=0.01, momentum_schedule="nesterov:3", noise=0.2,
         init_theta_std=0.5),
    dict(problem="double-well", dim=2, integrator="heavy-ball", lr=0.1, momentum=0.9, noise_model="loss-scaled",
         noise=0.5),
    dict(problem="quadratic", spectrum_distribution="uniform:0.5,2", dim=2, integrator="baoab", dt=0.2,
         damping=1.0, noise_model="loss-scaled", noise=0.4),
    dict(problem="quadratic", condition=5.0, dim=2, integrator="leapfrog", dt=0.5, init_velocity_std=1.0),
]


def _reference(config, start, count, step_begin, step_end, state):
    from inertia_gpu.backends.torch_ref import TorchEnsemble
    return TorchEnsemble().run(config, start, count, step_begin, step_end, state)


def _assert_ledger_close(sums, ref_sums, config, tol):
    """Columns 6..8 per group within tol x (kept trajectories x the run's energy scale): a relative
    error per column would blow up where W is ~0 by cancellation (a nearly conservative step)."""
    unit = ref_sums[..., :1].clamp(min=1.0) * energy_scale(config)
    err = ((sums[..., N_QUANTITIES:] - ref_sums[..., N_QUANTITIES:]).abs() / unit).nan_to_num(math.inf)
    assert float(err.max()) <= tol, f"ledger columns: {float(err.max()):.3g} of the energy scale > {tol:g}"


def _copy(state: ChunkState) -> ChunkState:
    return ChunkState(*(t.clone() for t in (state.theta, state.momentum, state.inertia0, state.first_passage,
                                            state.ledger)))


def _host(tmp_path, regs: bool = True) -> HostCudaEnsemble:
    """The CUDA kernel's host build (inertia_gpu.testing), fed exactly what CupyEnsemble passes."""
    return HostCudaEnsemble(build_dir=tmp_path, reg_max=None if regs else 0)


@needs_cxx
@pytest.mark.parametrize("case", range(len(HOST_CASES)))
@pytest.mark.parametrize("regs", [True, False], ids=["registers", "work-buffer"])
def test_host_ensemble_equals_reference(tmp_path, case, regs):
    config = SimulationConfig(trajectories=200, steps=11, record_every=1, seed=2 ** 40 + 17, dtype="float64",
                              **HOST_CASES[case]).validate()
    if not regs and case % 2:
        pytest.skip("work-buffer path: every other case is enough")
    host = _host(tmp_path, regs)
    start, count = 128, 70  # two groups, the second short
    for record_every, windows in ((1, [(0, 11)]), (2, [(0, 5), (5, 9), (9, 11)])):
        config.record_every = record_every
        ref_state = host_state = None
        for step_begin, step_end in windows:
            ref_state, ref_sums = _reference(config, start, count, step_begin, step_end, ref_state)
            host_state, sums = host.run(config, start, count, step_begin, step_end, host_state)
            assert sums.shape == ref_sums.shape == (len(recorded_in_window(config, step_begin, step_end)),
                                                     n_groups(count), N_COLUMNS)
            np.testing.assert_allclose(sums[..., :N_QUANTITIES].numpy(), ref_sums[..., :N_QUANTITIES].numpy(),
                                       rtol=1e-10, atol=1e-10)
            _assert_ledger_close(sums, ref_sums, config, 1e-12)
            for mine, ref in zip((host_state.theta, host_state.momentum, host_state.inertia0, host_state.ledger),
                                 (ref_state.theta, ref_state.momentum, ref_state.inertia0, ref_state.ledger)):
                np.testing.assert_allclose(mine.numpy(), ref.numpy(), rtol=1e-10, atol=1e-12)
            assert torch.equal(host_state.first_passage.to(torch.int32), ref_state.first_passage.to(torch.int32))
            host_state = _copy(host_state)


FLOAT32_CASES = HOST_CASES + [
    # temperature noise under both schedules and every integrator: the scale comes from the one table
    dict(problem="quadratic", condition=10.0, dim=3, integrator="heavy-ball", lr=0.2, momentum=0.7,
         noise_model="temperature", temperature=0.3),
    dict(problem="quadratic", condition=4.0, dim=2, integrator="leapfrog", dt=0.2, damping=0.7,
         noise_model="temperature", temperature=0.4),
    dict(problem="double-well", dim=3, integrator="baoab", dt=0.1, momentum_schedule="nesterov:2",
         noise_model="temperature", temperature=0.2),
    dict(problem="quadratic", spectrum_distribution="loguniform:0.1,2", dim=3, integrator="euler", dt=0.05,
         momentum_schedule="nesterov:4", noise_model="temperature", temperature=0.5),
]


@needs_cxx
@pytest.mark.parametrize("case", range(len(FLOAT32_CASES)))
def test_host_ensemble_float32_equals_reference(tmp_path, case):
    """float32: the kernel multiplies by the reference's own coefficients, so states agree to rounding."""
    config = SimulationConfig(trajectories=200, steps=13, record_every=1, seed=99 + case, dtype="float32",
                              **FLOAT32_CASES[case]).validate()
    host = _host(tmp_path)
    start, count = 64, 130
    ref_state, ref_sums = _reference(config, start, count, 0, 13, None)
    state, sums = host.run(config, start, count, 0, 13, None)
    rtol = 3e-5
    for name in ("theta", "momentum"):
        x, y = getattr(state, name), getattr(ref_state, name)
        assert x.dtype == y.dtype == torch.float32, name
        scale = float(y.abs().max())
        torch.testing.assert_close(x, y, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{name}: {m}")
    assert torch.equal(sums[..., 0], ref_sums[..., 0])  # the same trajectories kept
    q = N_QUANTITIES
    scale = ref_sums[..., :q].abs().amax(dim=(0, 1), keepdim=True).clamp(min=1e-30)
    torch.testing.assert_close(sums[..., :q] / scale, ref_sums[..., :q] / scale, rtol=0, atol=4 * rtol)
    _assert_ledger_close(sums, ref_sums, config, rtol)
    ledger_scale = energy_scale(config)
    torch.testing.assert_close(state.ledger / ledger_scale, ref_state.ledger / ledger_scale, rtol=0, atol=rtol)
    assert (state.first_passage != ref_state.first_passage).any(dim=1).float().mean() <= 0.02


# --- (d) on a GPU ----------------------------------------------------------------------------------

def _gpu_ready():
    reason = cupy_backend.cupy_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


GPU_CASES = HOST_CASES + [
    dict(problem="quadratic", dim=40, condition=100.0, integrator="baoab", dt=0.2, damping=0.1, noise=0.1),
    dict(problem="rosenbrock", dim=2, integrator="heavy-ball", lr=1e-3, momentum=0.9, noise=0.05,
         init_theta_std=0.3),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(len(GPU_CASES)))
def test_cupy_ensemble_equals_reference(case, dtype):
    _gpu_ready()
    from inertia_gpu.backends.torch_ref import TorchEnsemble
    config = SimulationConfig(trajectories=1000, steps=23, record_every=2, seed=7, dtype=dtype, device="cuda",
                              **GPU_CASES[case]).validate()
    cupy_ens, ref = cupy_backend.CupyEnsemble(), TorchEnsemble()
    start, count = 64, 1000
    rtol = 1e-5 if dtype == "float32" else 1e-10
    states = [None, None]
    for step_begin, step_end in ((0, 10), (10, 23)):
        s_cu, sums_cu = cupy_ens.run(config, start, count, step_begin, step_end, states[0])
        s_ref, sums_ref = ref.run(config, start, count, step_begin, step_end, states[1])
        states = [s_cu, s_ref]
        assert sums_cu.dtype == torch.float64 and sums_cu.shape == sums_ref.shape
        a, b = sums_cu.cpu(), sums_ref.cpu()
        assert torch.equal(a[..., 0], b[..., 0])  # the same trajectories stay finite
        # statistics: group means of I, K, L, S and I^2 within 1e-5 relative (of the group's scale)
        scale = b[..., 1:N_QUANTITIES].abs().amax(dim=(0, 1), keepdim=True).clamp_min(1e-300)
        assert ((a[..., 1:N_QUANTITIES] - b[..., 1:N_QUANTITIES]).abs() / scale).max() <= rtol
        _assert_ledger_close(a, b, config, 4 * rtol)
        torch.testing.assert_close(s_cu.theta.cpu(), s_ref.theta.cpu(), rtol=max(rtol, 1e-4) * 10, atol=1e-4)
        # first passage may flip only where I_n sits at f I_0 within rounding
        assert (s_cu.first_passage.cpu() != s_ref.first_passage.cpu()).float().mean() < 0.01
    # determinism: the same launch twice gives the same bits
    _, again = cupy_ens.run(config, start, count, 0, 10, None)
    _, first = cupy_ens.run(config, start, count, 0, 10, None)
    assert torch.equal(again, first)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opts", [
    dict(momentum=0.9, noise=0.1),
    dict(momentum=0.9, dampening=0.1, weight_decay=0.01, maximize=True),
    dict(momentum=0.8, nesterov=True, noise=0.05, weight_decay=0.02),
    dict(momentum=0.0, noise=0.2),
])
def test_cupy_sgd_step_equals_foreach(dtype, opts):
    _gpu_ready()
    from inertia_gpu.optim import inertia_sgd
    torch.manual_seed(0)
    numel, lr, seed, pidx = 100_003, 0.05, 2 ** 33 + 5, 3
    p0 = torch.randn(numel, dtype=dtype, device="cuda")
    grads = [torch.randn(numel, dtype=dtype, device="cuda") for _ in range(3)]
    group = dict(lr=lr, momentum=opts.get("momentum", 0.0), dampening=opts.get("dampening", 0.0),
                 weight_decay=opts.get("weight_decay", 0.0), nesterov=opts.get("nesterov", False),
                 maximize=opts.get("maximize", False), noise=opts.get("noise", 0.0), temperature=None, seed=seed)
    p_ref, bufs = p0.clone(), [None]
    p_cu, b_cu = p0.clone(), torch.empty_like(p0)
    for t, g in enumerate(grads):
        sums_ref = inertia_sgd([p_ref], [g], bufs, step=torch.tensor(t, device="cuda"), parameter_index=[pidx],
                               **{k: v for k, v in group.items()}, impl="foreach")
        sums_cu = cuda_step.cupy_sgd_step(p_cu, g, b_cu, lr=lr, momentum=group["momentum"],
                                             dampening=group["dampening"], weight_decay=group["weight_decay"],
                                             nesterov=group["nesterov"], maximize=group["maximize"],
                                             noise=group["noise"], seed=seed, step=t, parameter=pidx, first=t == 0)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(p_cu, p_ref, **tol)
        if group["momentum"] != 0:
            torch.testing.assert_close(b_cu, bufs[0], **tol)
        torch.testing.assert_close(sums_cu, sums_ref.to(sums_cu.device), rtol=1e-6, atol=1e-6)
        assert math.isfinite(float(sums_cu.sum()))


# --- (e) contracts 4 and 5 in the host build: float64 observables, divergence to NaN ------------------

@needs_cxx
def test_host_ensemble_deep_decay_float32_agrees_with_float64(tmp_path):
    """Inertia decays to ~1e-55, far below float32's normal range: the kernel's float64 observables of the
    float32 state agree with the float64 reference run to float32 rounding of the state."""
    base = SimulationConfig(spectrum=[1.0, 0.9], lr=0.8, momentum=0.0, steps=50, trajectories=130, record_every=5,
                            seed=4, dtype="float64").validate()
    _, ref = _reference(base, 0, 130, 0, 50, None)
    f32 = SimulationConfig(spectrum=[1.0, 0.9], lr=0.8, momentum=0.0, steps=50, trajectories=130, record_every=5,
                           seed=4, dtype="float32").validate()
    state, sums = _host(tmp_path).run(f32, 0, 130, 0, 50, None)
    assert state.inertia0.dtype == torch.float64
    assert torch.equal(sums[..., 0], ref[..., 0])  # nothing flushed to zero, nothing dropped
    mean, want = sums[..., 1].sum(1) / sums[..., 0].sum(1), ref[..., 1].sum(1) / ref[..., 0].sum(1)
    assert float(want[-1]) < 1e-50
    torch.testing.assert_close(mean, want, rtol=2e-5, atol=0)


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_ensemble_diverged_trajectories_become_nan(tmp_path, dtype):
    """lr lambda > 2 (1 + mu) for part of a drawn spectrum, a finite bound: the same trajectories are dropped
    at the same recorded steps as by the reference, and their state is NaN."""
    config = SimulationConfig(spectrum_distribution="uniform:0.5,6", dim=1, lr=1.0, momentum=0.5, steps=40,
                              trajectories=130, record_every=2, dtype=dtype, seed=5, diverge_above=50.0).validate()
    host = _host(tmp_path)
    ref_state = host_state = None
    for begin, end in ((0, 13), (13, 40)):
        ref_state, ref_sums = _reference(config, 0, 130, begin, end, ref_state)
        host_state, sums = host.run(config, 0, 130, begin, end, host_state)
        assert torch.equal(sums[..., 0], ref_sums[..., 0])
    dropped = torch.isnan(ref_state.theta[:, 0])
    assert 0 < int(dropped.sum()) < 130
    assert torch.equal(torch.isnan(host_state.theta[:, 0]), dropped)
    assert torch.isnan(host_state.momentum[dropped]).all()
    assert torch.isnan(host_state.ledger[dropped]).all() and torch.isfinite(host_state.ledger[~dropped]).all()


@needs_cxx
@pytest.mark.parametrize("integrator", ["heavy-ball", "euler", "baoab"])
def test_host_ensemble_without_the_ledger_writes_zeros_and_the_same_dynamics(tmp_path, integrator):
    """config.ledger False selects the kernel without the accumulation: columns 6..8 are 0.0 (poisoned
    NaN otherwise), the quantities and the state are bit for bit those of the kernel with the ledger (the
    host build contracts nothing), and the ledger state passes through a resumed window unchanged."""
    kw = dict(problem="quadratic", condition=10.0, dim=3, integrator=integrator, noise_model="temperature",
              temperature=0.4, damping=0.5, dt=0.1, lr=0.05, momentum=0.8, trajectories=130, steps=9,
              record_every=2, seed=11, dtype="float32")
    on = SimulationConfig(**kw).validate()
    off = SimulationConfig(**kw, ledger=False).validate()
    host = _host(tmp_path)
    runs = {}
    for name, config in (("on", on), ("off", off)):
        state, first = host.run(config, 0, 130, 0, 4, None)
        if name == "off":
            assert torch.equal(state.ledger, torch.zeros(130, 2, dtype=torch.float64))
            state = ChunkState(state.theta, state.momentum, state.inertia0, state.first_passage,
                               torch.full((130, 2), 0.25, dtype=torch.float64))
        state, second = host.run(config, 0, 130, 4, 9, state)
        runs[name] = (state, torch.cat([first, second]))
    (s_on, sums_on), (s_off, sums_off) = runs["on"], runs["off"]
    assert torch.equal(sums_off[..., N_QUANTITIES:], torch.zeros_like(sums_off[..., N_QUANTITIES:]))
    assert torch.equal(sums_on[..., :N_QUANTITIES], sums_off[..., :N_QUANTITIES])
    assert (sums_on[1:, :, N_QUANTITIES] > 0).all()  # the ledger run does dissipate
    for name in ("theta", "momentum", "inertia0", "first_passage"):
        assert torch.equal(getattr(s_on, name), getattr(s_off, name)), name
    assert torch.equal(s_off.ledger, torch.full((130, 2), 0.25, dtype=torch.float64))


def test_a_resumed_ledger_of_the_wrong_shape_is_refused():
    config = SimulationConfig(problem="quadratic", dim=2).validate()
    state = ChunkState(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, dtype=torch.float64),
                       torch.full((3, 3), -1, dtype=torch.int32), torch.zeros(3, 2, dtype=torch.float64))
    assert torch.equal(cupy_backend.ledger_state(config, state, "cpu"), torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        cupy_backend.ledger_state(config, dataclasses.replace(state, ledger=torch.zeros(3)), "cpu")


# --- (f) sgd.cu's step on the host --------------------------------------------------------------------

SGD_MAIN = r"""
#include "sgd.cu"
#include <stdio.h>
#include <stdlib.h>
#include <vector>

static double rd() { double x; if (scanf("%lf", &x) != 1) exit(3); return x; }
static long long ri() { long long x; if (scanf("%lld", &x) != 1) exit(3); return x; }

int main() {
    IgSgdArgs a;
    a.numel = ri();
    a.lr = rd(); a.momentum = rd(); a.dampening = rd(); a.weight_decay = rd(); a.noise = rd();
    a.nesterov = (int)ri(); a.maximize = (int)ri(); a.first = (int)ri(); a.has_buf = (int)ri();
    a.k0 = (ig_u32)ri(); a.k1 = (ig_u32)ri(); a.step = (ig_u32)ri(); a.param_index = (ig_u32)ri();
    std::vector<REAL> p(a.numel), g(a.numel), b(a.numel);
    for (auto &x : p) x = (REAL)rd();
    for (auto &x : g) x = (REAL)rd();
    for (auto &x : b) x = (REAL)rd();
    double acc[IG_SGD_SUMS] = {0.0, 0.0, 0.0};
    for (long long q = 0; q < (a.numel + 3) / 4; ++q) ig_sgd_quad<REAL>(p.data(), g.data(), b.data(), q, a, acc);
    for (auto x : p) printf("%.17e\n", (double)x);
    for (auto x : b) printf("%.17e\n", (double)x);
    for (double x : acc) printf("%.17e\n", x);
    return 0;
}
"""


def _host_sgd_step(exe, p, g, b, *, first, step, parameter, seed, lr, momentum, dampening=0.0, weight_decay=0.0,
                   nesterov=False, maximize=False, noise=0.0):
    """One cupy_sgd_step's arithmetic on the host: (param, buffer, float64 [3] sums)."""
    n = p.numel()
    head = [n, lr, momentum, dampening, weight_decay, noise, int(nesterov), int(maximize), int(first),
            int(momentum != 0), seed & 0xFFFFFFFF, seed >> 32, step, parameter]
    stdin = " ".join(repr(v) for v in head) + "\n" + "\n".join(
        " ".join(repr(float(x)) for x in t.double().tolist()) for t in (p, g, b)) + "\n"
    vals = np.array(_run([str(exe)], input=stdin).split(), dtype=np.float64)
    dtype = p.dtype
    return (torch.from_numpy(vals[:n].copy()).to(dtype), torch.from_numpy(vals[n:2 * n].copy()).to(dtype),
            torch.from_numpy(vals[2 * n:].copy()))


@needs_cxx
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("opts", [
    dict(momentum=0.9, noise=0.3),
    dict(momentum=0.8, dampening=0.25, weight_decay=0.02, maximize=True, noise=0.1),
    dict(momentum=0.7, nesterov=True, noise=0.05, weight_decay=0.01),
    dict(momentum=0.9, dampening=0.1),
    dict(momentum=0.0, noise=0.2),
])
def test_host_sgd_step_equals_foreach(tmp_path, dtype, opts):
    """Three steps (the first creates the buffer) of sgd.cu's quad loop against the foreach implementation,
    on fresh random inputs of an odd size (a partial last quad): parameters, buffers and the sums
    (|b|^2, <b, d>, <q, 2 momentum b + q>) -- the last is the ledger's injected energy over lr/2."""
    from inertia_gpu.optim import inertia_sgd
    real = "double" if dtype == torch.float64 else "float"
    exe = _build(tmp_path, f"sgd_{real}", SGD_MAIN, defines=[f"-DREAL={real}"])
    seed = int(np.random.default_rng().integers(0, 2 ** 63))
    print(f"seed = {seed}")
    g = torch.Generator().manual_seed(seed % 2 ** 31)
    numel, lr, parameter = 103, 0.05, 5
    p_ref = torch.randn(numel, generator=g, dtype=torch.float64).to(dtype)
    p_host, b_host, bufs = p_ref.clone(), torch.full((numel,), math.nan, dtype=dtype), [None]
    group = {**dict(lr=lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False, noise=0.0),
             **opts}
    tol = dict(rtol=2e-6, atol=2e-6) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-13)
    for t in range(3):
        grad = torch.randn(numel, generator=g, dtype=torch.float64).to(dtype)
        want = inertia_sgd([p_ref], [grad], bufs, step=torch.tensor(t), parameter_index=[parameter], seed=seed,
                           temperature=None, impl="foreach", **group)
        p_host, b_new, got = _host_sgd_step(exe, p_host, grad, b_host, first=t == 0, step=t, parameter=parameter,
                                            seed=seed, **group)
        torch.testing.assert_close(p_host, p_ref, **tol)
        if group["momentum"] != 0:
            b_host = b_new
            torch.testing.assert_close(b_host, bufs[0], **tol)
        scale = float(want.abs().max()) or 1.0
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=tol["rtol"] * 4)
        if group["noise"] and group["momentum"]:
            assert float(got[2]) != 0.0  # the injected term is formed, not left at zero
        else:
            assert float(got[2]) == 0.0
