"""The Triton ensemble kernel against the reference backend (CPU: under TRITON_INTERPRET=1).

What these tests prove, on tiny sizes (the interpreter is slow per program):
- every kernel variant (problem x integrator x schedule x noise model, drawn spectra,
  float32 / float64, padded and unpadded dimensions, windows cut at steps that are not
  multiples of 4, record_every > 1) reproduces TorchEnsemble: states to the dtype's
  rounding, per-group partial sums, first passage exactly; every output is poisoned
  (NaN / INT32_MIN) before the launch, so an element the kernel does not write fails;
- the noise the kernel applies is the reference Philox stream, sample for sample;
- the statistics are bitwise identical for any chunking, window cut and rank count, and BLOCK
  changes them only within the float64 summation bound;
- the mean inertia lies within 4 standard errors of the exact theory;
- the ledger columns (cumulative dissipated, injected, residual) agree with inertia_gpu/ledger.py per
  group, for every integrator, to float64 rounding of the energy scale (float32: to its rounding); they
  are bitwise identical for any chunking and window cut; without the ledger they are exactly 0.0 and
  everything else is bit for bit the same.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from bounds import summation_order_bound  # noqa: E402
from conftest import HAS_CUDA  # noqa: E402

from inertia_gpu import distributed, rng  # noqa: E402
from inertia_gpu import ledger as ledger_ref  # noqa: E402
from inertia_gpu.spec import N_COLUMNS, N_QUANTITIES  # noqa: E402
from inertia_gpu.backends import triton_ensemble  # noqa: E402
from inertia_gpu.backends.torch_ref import TorchEnsemble  # noqa: E402
from inertia_gpu.backends.triton_ensemble import TritonEnsemble  # noqa: E402
from inertia_gpu.config import SimulationConfig  # noqa: E402
from inertia_gpu.engine import simulate  # noqa: E402

DEVICE = "cuda" if HAS_CUDA else "cpu"
N = 128

PROBLEMS = {
    "quadratic": dict(problem="quadratic", spectrum=[0.25, 1.0, 3.0]),  # dim 3: a padded tile (DIMP 4)
    "double-well": dict(problem="double-well", dim=2, init_theta_std=1.2),
    "rosenbrock": dict(problem="rosenbrock", dim=3, init_theta_std=0.3),
}
INTEGRATORS = {
    "heavy-ball": dict(integrator="heavy-ball", lr=0.05, momentum=0.9),
    "euler": dict(integrator="euler", dt=0.05, damping=0.5),
    "leapfrog": dict(integrator="leapfrog", dt=0.1, damping=0.5),
    "baoab": dict(integrator="baoab", dt=0.1, damping=0.5),
}
SMALL_STEP = {"heavy-ball": dict(lr=0.001), "euler": dict(dt=0.01), "leapfrog": dict(dt=0.01), "baoab": dict(dt=0.01)}
NOISES = {
    "additive": dict(noise_model="additive", noise=0.5),
    "temperature": dict(noise_model="temperature", temperature=0.3),
    "loss-scaled": dict(noise_model="loss-scaled", noise=0.3),
}
SCHEDULES = {"constant": dict(momentum_schedule="constant"), "nesterov": dict(momentum_schedule="nesterov:3")}


def make_config(problem="quadratic", integrator="heavy-ball", schedule="constant", noise_kind="additive", **kw):
    opts = dict(trajectories=N, steps=11, seed=20240607, init_velocity_std=0.5, backend="triton", device=DEVICE)
    opts.update(PROBLEMS[problem])
    opts.update(INTEGRATORS[integrator])
    if problem == "rosenbrock":
        opts.update(SMALL_STEP[integrator])
    opts.update(NOISES[noise_kind])
    opts.update(SCHEDULES[schedule])
    opts.update(kw)
    return SimulationConfig(**opts).validate()


def assert_state_close(got, want, dtype: str, what: str):
    """Agreement to the dtype's rounding, relative to the size of the quantity."""
    rel = 2e-5 if dtype == "float32" else 1e-12
    scale = want.abs().max().clamp(min=1.0)
    err = (got.double() - want.double()).abs().max()
    assert torch.isfinite(got).all(), f"{what}: non-finite (unwritten?) elements"
    assert err <= rel * scale, f"{what}: max abs error {float(err):.3g} > {rel:g} x {float(scale):.3g}"




def assert_partials_close(got, want, dtype: str):
    """The quantities to the dtype's rounding of each column's scale; the ledger columns (when the
    reference forms them) to the rounding of the energy scale (the inertia column's), since the residual
    W itself may be far smaller than the energies whose balance it closes."""
    assert got.shape[:2] == want.shape[:2] and got.shape[-1] == N_COLUMNS, (got.shape, want.shape)
    assert not torch.isnan(got).any(), "partials: an element was not written"
    assert torch.equal(got[..., 0], want[..., 0]), "finite counts differ"
    if want.numel() == 0:
        return
    rel = 2e-5 if dtype == "float32" else 1e-11
    q = slice(0, N_QUANTITIES)
    scale = want[..., q].abs().amax(dim=1, keepdim=True).clamp(min=1e-30)  # per record and quantity
    err = ((got[..., q] - want[..., q]).abs() / scale).max()
    assert err <= rel, f"partials: relative error {float(err):.3g} > {rel:g}"
    if want.shape[-1] > N_QUANTITIES:
        assert_ledger_close(got, want[..., N_QUANTITIES:], dtype)


def assert_ledger_close(got, want_ledger, dtype: str, what: str = "ledger columns", rel32: float = 2e-5):
    """got [records, groups, 9] against want [records, groups, 3] (dissipated, injected, residual):
    float64 to 1e-12 of the energy scale (the largest group sum of the inertia), float32 to rel32 of it
    (default: the states' own agreement, 2e-5; chaotic problems amplify their float32 rounding)."""
    want_ledger = torch.as_tensor(want_ledger, dtype=torch.float64)
    energy = got[..., 1].abs().max().clamp(min=1e-30)
    err = (got[..., N_QUANTITIES:].cpu() - want_ledger.cpu()).abs().max()
    rel = rel32 if dtype == "float32" else 1e-12
    assert err <= rel * energy, f"{what}: error {float(err):.3g} > {rel:g} x energy {float(energy):.3g}"


def compare_windows(cfg: SimulationConfig, windows, count=N, start=0, backend=None):
    """Run both backends over the same windows; compare state and partials after each."""
    tri = backend or TritonEnsemble(poison=True)
    ref = TorchEnsemble()
    s_t = s_r = None
    for begin, end in windows:
        s_t, p_t = tri.run(cfg, start, count, begin, end, s_t)
        s_r, p_r = ref.run(cfg, start, count, begin, end, s_r)
        tag = f"window [{begin}, {end})"
        assert_state_close(s_t.theta, s_r.theta, cfg.dtype, f"theta after {tag}")
        assert_state_close(s_t.momentum, s_r.momentum, cfg.dtype, f"momentum after {tag}")
        assert_state_close(s_t.inertia0, s_r.inertia0, cfg.dtype, f"inertia0 after {tag}")
        assert torch.equal(s_t.first_passage.cpu(), s_r.first_passage.cpu()), f"first passage after {tag}"
        if getattr(s_r, "ledger", None) is not None:
            assert_state_close(s_t.ledger, s_r.ledger, cfg.dtype, f"ledger after {tag}")
        assert_partials_close(p_t.cpu(), p_r.cpu(), cfg.dtype)
    return s_t


# --- every variant against the reference ---------------------------------------------------------


@pytest.mark.parametrize("noise", list(NOISES))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("integrator", list(INTEGRATORS))
@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_variant_matches_reference_float32(problem, integrator, schedule, noise):
    cfg = make_config(problem, integrator, schedule, noise)
    compare_windows(cfg, [(0, 5), (5, 11)])  # cuts inside quads: steps 4 | 5, 6, 7 | 8, 9, 10


@pytest.mark.parametrize("noise", list(NOISES))
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("integrator", list(INTEGRATORS))
def test_variant_matches_reference_float64(integrator, schedule, noise):
    cfg = make_config("quadratic", integrator, schedule, noise, dtype="float64")
    compare_windows(cfg, [(0, 6), (6, 11)])


@pytest.mark.parametrize("problem", ["double-well", "rosenbrock"])
def test_nonquadratic_float64(problem):
    cfg = make_config(problem, "leapfrog", "nesterov", "loss-scaled", dtype="float64")
    compare_windows(cfg, [(0, 3), (3, 10)])


@pytest.mark.parametrize("dist", ["uniform:0.5,2", "loguniform:0.1,4", "lognormal:0,0.5"])
def test_drawn_spectrum(dist):
    cfg = make_config("quadratic", "heavy-ball", spectrum=None, dim=3, spectrum_distribution=dist)
    compare_windows(cfg, [(0, 7), (7, 9)])


def test_record_every_and_no_noise():
    cfg = make_config("quadratic", "baoab", record_every=3, steps=12, noise_kind="additive")
    compare_windows(cfg, [(0, 7), (7, 8), (8, 12)])  # windows without a recorded step too
    quiet = dataclasses.replace(cfg, noise=0.0, record_every=2).validate()
    assert not quiet.noisy
    compare_windows(quiet, [(0, 5), (5, 12)])


def test_unpadded_dims_and_ragged_chunk():
    # dim 4 (no padding) and 1; a count that is not a multiple of BLOCK or of GROUP; start > 0
    cfg = make_config("quadratic", "leapfrog", spectrum=[0.1, 0.5, 1.0, 2.0])
    compare_windows(cfg, [(0, 4), (4, 9)], count=100, start=64, backend=TritonEnsemble(block=64, poison=True))
    cfg1 = make_config("double-well", "heavy-ball", dim=1, trajectories=200)
    compare_windows(cfg1, [(0, 2), (2, 11)], count=200, backend=TritonEnsemble(block=128, poison=True))


# --- the wide layout (one trajectory per program) for large dimensions ------------------------------


@pytest.mark.parametrize("problem,integrator,schedule,noise,dim,dtype", [
    ("quadratic", "heavy-ball", "constant", "additive", 16, "float32"),
    ("double-well", "baoab", "nesterov", "temperature", 12, "float32"),
    ("rosenbrock", "leapfrog", "constant", "loss-scaled", 40, "float64"),  # DIM > 32: the gather shift
    ("rosenbrock", "euler", "nesterov", "additive", 9, "float32"),  # DIM <= 32: the unrolled shift
])
def test_wide_layout_matches_reference(problem, integrator, schedule, noise, dim, dtype):
    extra = dict(spectrum=None, condition=10.0) if problem == "quadratic" else {}
    cfg = make_config(problem, integrator, schedule, noise, dim=dim, dtype=dtype, trajectories=80, **extra)
    assert triton_ensemble.wide(cfg)
    # one program per trajectory (slow under the interpreter): a ragged chunk of 10 in the second group
    compare_windows(cfg, [(0, 3), (3, 6)], count=10, start=64)


# --- noise: the reference Philox stream, sample for sample --------------------------------------


def test_kernel_noise_is_the_reference_stream():
    """lam = 0, momentum 0, lr 1: after the step n -> n + 1, b = s xi_n exactly (s = 1)."""
    for dtype in ("float32", "float64"):
        cfg = make_config("quadratic", "heavy-ball", spectrum=[0.0, 0.0, 0.0], momentum=0.0, lr=1.0, noise=1.0,
                          init_velocity_std=0.0, seed=2 ** 63 + 12345, dtype=dtype)
        tri = TritonEnsemble(poison=True)
        traj = torch.arange(64, 64 + N, device=DEVICE)
        state = None
        for n in range(6):  # one-step windows: every lane, head and tail paths
            state, _ = tri.run(cfg, 64, N, n, n + 1, state)
            want = rng.step_normals(traj, n, 3, cfg.seed, triton_ensemble.DTYPES[dtype])
            tol = 2e-6 if dtype == "float32" else 1e-13
            torch.testing.assert_close(state.momentum, want, rtol=0, atol=tol)


import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from inertia_gpu.kernels.philox import philox_normals4  # noqa: E402


@triton.jit
def _draw(out_bits, out_z, seed, c1, c3, BLOCK: tl.constexpr, ACC: tl.constexpr):
    i = tl.arange(0, BLOCK)
    c0 = (i * 7919 + 3).to(tl.uint32)
    cc1 = (i * 0 + c1).to(tl.uint32)
    c2 = (i % 5).to(tl.uint32)
    cc3 = (i * 0 + c3).to(tl.uint32)
    x0, x1, x2, x3 = tl.philox(seed, c0, cc1, c2, cc3)
    tl.store(out_bits + i * 4 + 0, x0.to(tl.int64))
    tl.store(out_bits + i * 4 + 1, x1.to(tl.int64))
    tl.store(out_bits + i * 4 + 2, x2.to(tl.int64))
    tl.store(out_bits + i * 4 + 3, x3.to(tl.int64))
    z0, z1, z2, z3 = philox_normals4(seed, c0, cc1, c2, cc3, ACC)
    tl.store(out_z + i * 4 + 0, z0)
    tl.store(out_z + i * 4 + 1, z1)
    tl.store(out_z + i * 4 + 2, z2)
    tl.store(out_z + i * 4 + 3, z3)


def test_philox_helpers_match_rng():
    """tl.philox is Random123's Philox4x32-10 bit for bit; the shared transform is rng.normals4."""
    block = 256
    i = torch.arange(block, dtype=torch.int64)
    for seed, c1, c3, dt, tl_dt in [(7, 3, 0, torch.float32, tl.float32), (2 ** 64 - 5, 2 ** 32 - 1, 2, torch.float64,
                                                                              tl.float64)]:
        bits = torch.zeros(block, 4, dtype=torch.int64, device=DEVICE)
        z = torch.full((block, 4), float("nan"), dtype=dt, device=DEVICE)
        _draw[(1,)](bits, z, seed, c1, c3, BLOCK=block, ACC=tl_dt)
        k0, k1 = rng.seed_key(seed)
        want_bits = torch.stack(rng.philox4x32(i * 7919 + 3, c1, i % 5, c3, k0, k1), dim=-1)
        assert torch.equal(bits.cpu(), want_bits)
        want_z = rng.normals4(i * 7919 + 3, c1, i % 5, c3, seed, dt)
        torch.testing.assert_close(z.cpu(), want_z, rtol=0, atol=2e-6 if dt == torch.float32 else 1e-13)


from inertia_gpu.kernels.philox import _sincos64, _sqrt64  # noqa: E402


@triton.jit
def _sincos_of_u2(u_ptr, s_ptr, c_ptr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    s, c = _sincos64(6.283185307179586 * tl.load(u_ptr + i))
    tl.store(s_ptr + i, s)
    tl.store(c_ptr + i, c)


def test_float64_sincos_agrees_with_correctly_rounded_to_an_ulp():
    """The float64 kernels' sin and cos of 2 pi u2 (one shared reduction, no libdevice slow-path call)
    against torch's, over every 64th value u2 takes (k 2^-24) and every value next to a quadrant boundary;
    checked over all 2^24 values once: at most 1 ulp."""
    k = torch.cat([torch.arange(0, 1 << 24, 64), *(torch.arange(-32, 33) + q * (1 << 22) for q in range(1, 4)),
                   torch.arange((1 << 24) - 64, 1 << 24)])
    k = torch.cat([k, torch.zeros((-k.numel()) % 4096, dtype=k.dtype)])
    u = k.to(torch.float64) * 2.0 ** -24
    s, c = torch.full_like(u, math.nan), torch.full_like(u, math.nan)
    _sincos_of_u2[(u.numel() // 4096,)](u, s, c, BLOCK=4096)
    angle = 6.283185307179586 * u
    for got, want in [(s, torch.sin(angle)), (c, torch.cos(angle))]:
        ulp = want.abs().nextafter(torch.tensor(math.inf, dtype=torch.float64)) - want.abs()
        assert float(((got - want).abs() / ulp).max()) <= 1.0


@triton.jit
def _sqrt_of(x_ptr, out_ptr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + i, _sqrt64(tl.load(x_ptr + i)))


def test_float64_sqrt_of_the_radius_agrees_with_correctly_rounded_to_an_ulp():
    """sqrt(-2 log u1) for every 64th value of u1 and its extremes: at most 1 ulp from torch.sqrt (mostly equal)."""
    k = torch.cat([torch.arange(0, 1 << 24, 64), torch.arange((1 << 24) - 4096, (1 << 24) - 1)])
    x = -2.0 * torch.log((k + 1).to(torch.float64) * 2.0 ** -24)
    x = torch.cat([x, torch.ones((-x.numel()) % 4096, dtype=x.dtype)])
    got = torch.full_like(x, math.nan)
    _sqrt_of[(x.numel() // 4096,)](x, got, BLOCK=4096)
    want = torch.sqrt(x)
    ulp = want.nextafter(torch.tensor(math.inf, dtype=torch.float64)) - want
    assert float(((got - want).abs() / ulp).max()) <= 1.0
    assert float((got == want).double().mean()) > 0.95


# --- statistics: bitwise for any chunking, window cut or rank count; BLOCK changes rounding only -----


class _LocalShard(distributed.Shard):
    """A rank of a world run one after another in this process; merge returns only its own rows."""

    def merge(self, table, hist, own):
        self.own, self.table, self.hist = own, table.copy(), hist.copy()
        return table, hist


def _split_config():
    return make_config("quadratic", "heavy-ball", spectrum=[1.0], trajectories=320, steps=10, replicates=5,
                       noise_kind="loss-scaled", record_every=1)


def test_statistics_identical_for_any_chunking_window_and_rank_count():
    cfg = _split_config()
    first = simulate(dataclasses.replace(cfg), with_theory=False)
    for chunk, window in [(64, 3), (192, 4), (128, 7), (256, 5)]:
        other = simulate(dataclasses.replace(cfg), chunk=chunk, window=window, with_theory=False)
        assert np.array_equal(first.replicate_sums, other.replicate_sums), (chunk, window)
        assert np.array_equal(first.first_passage_hist, other.first_passage_hist), (chunk, window)
    world = 3
    table = np.zeros_like(first.replicate_sums)
    hist = np.zeros_like(first.first_passage_hist)
    for rank in range(world):
        shard = _LocalShard(rank, world)
        simulate(dataclasses.replace(cfg), with_theory=False, shard=shard, chunk=128, window=6)
        a, b = shard.own
        table[:, a:b] = shard.table[:, a:b]
        hist += shard.hist
    assert np.array_equal(table, first.replicate_sums)
    assert np.array_equal(hist, first.first_passage_hist)
    ref = simulate(dataclasses.replace(cfg, backend="torch"), with_theory=False)
    np.testing.assert_allclose(first.stats["inertia_mean"], ref.stats["inertia_mean"], rtol=1e-5)
    assert np.array_equal(first.first_passage_hist, ref.first_passage_hist)


def test_block_size_changes_only_the_summation_order(monkeypatch):
    """BLOCK (trajectories per thread) reorders the float64 group sums, nothing else: within the bound of
    tests/bounds.py summation_order_bound (two orders of the same terms)."""
    cfg = _split_config()
    runs = []
    for block in (64, 256, 1024):
        monkeypatch.setattr(triton_ensemble, "default_block", lambda config, count, b=block: (b, 4))
        runs.append(simulate(dataclasses.replace(cfg), with_theory=False, chunk=192, window=7))
    sums = runs[0].replicate_sums
    bound = summation_order_bound(cfg, sums)
    for other in runs[1:]:
        diff = np.abs(other.replicate_sums - sums)
        assert np.all(diff <= bound), float(np.max(diff / np.maximum(bound, 1e-300)))
        assert np.array_equal(other.replicate_sums[..., 0], sums[..., 0])  # counts are exact
        assert np.array_equal(other.first_passage_hist, runs[0].first_passage_hist)


# --- against theory -------------------------------------------------------------------------------


def test_mean_inertia_within_4_sem_of_theory():
    cfg = make_config("quadratic", "heavy-ball", spectrum=[0.5, 2.0], lr=0.1, momentum=0.8, trajectories=2048,
                      steps=12, replicates=16)
    result = simulate(cfg)
    theory = result.theory.get("inertia")
    assert theory is not None, "inertia_gpu.theory.expected gave nothing for a quadratic"
    z = (result.stats["inertia_mean"] - np.asarray(theory)) / result.stats["inertia_sem"]
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 4.0, z
    ref = simulate(dataclasses.replace(cfg, backend="torch"), with_theory=False)
    np.testing.assert_allclose(result.stats["inertia_mean"], ref.stats["inertia_mean"], rtol=1e-5)


def test_unavailable_reason(monkeypatch):
    cfg = make_config()
    if DEVICE == "cpu":
        assert TritonEnsemble.unavailable_reason(cfg) is None  # the interpreter is on (conftest)
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        reason = TritonEnsemble.unavailable_reason(cfg)
        assert reason and "\n" not in reason and "cuda" in reason
    else:
        assert TritonEnsemble.unavailable_reason(cfg) is None
    assert math.isfinite(0.0)


# --- contracts: recording table, float64 observables, divergence ---------------------------------


def test_records_exactly_the_steps_the_table_names(monkeypatch):
    """The kernel records where recorded_in_window says, not where n % record_every == 0."""
    from inertia_gpu.backends import torch_ref
    steps = {0, 1, 2, 5, 9, 10, 17, 20}

    def irregular(config, begin, end):
        first = 0 if begin == 0 else begin + 1
        return [n for n in range(first, end + 1) if n in steps]

    monkeypatch.setattr(triton_ensemble, "recorded_in_window", irregular)
    monkeypatch.setattr(torch_ref, "recorded_in_window", irregular)
    cfg = make_config("quadratic", "leapfrog", steps=20)
    compare_windows(cfg, [(0, 6), (6, 13), (13, 14), (14, 20)])  # a window without a recorded step too


def test_float32_deep_decay_keeps_float64_observables():
    """I_n falls to ~1e-42, below float32's smallest normal (1.2e-38): a float32 run's statistics still
    agree with float64 (the observables are formed from the float64-converted state) and exact theory.

    lr lam = 0.5 and momentum 0: theta_{n+1} = theta_n / 2 exactly in either dtype, so the float32 state
    is the float64 one rounded once at the start; the inertia decays by 4 per step.
    """
    opts = dict(spectrum=[1.0], lr=0.5, momentum=0.0, noise=0.0, steps=72, trajectories=256, replicates=4,
                init_velocity_std=0.0)
    f32 = simulate(make_config("quadratic", "heavy-ball", **opts))
    f64 = simulate(make_config("quadratic", "heavy-ball", dtype="float64", backend="torch", **opts),
                   with_theory=False)
    mean32, mean64 = f32.stats["inertia_mean"], f64.stats["inertia_mean"]
    assert mean64[-1] < 1e-40 and np.all(mean32 > 0)
    np.testing.assert_allclose(mean32, mean64, rtol=1e-6)
    theory = np.asarray(f32.theory["inertia"])
    z = (mean32 - theory) / f32.stats["inertia_sem"]
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 4.0, z


def test_divergence_turns_the_state_to_nan_and_drops_it_from_the_sums():
    """diverge_above: at each recorded step a trajectory with float64 inertia above the bound gets NaN state
    and leaves every sum; the others run on, bit for bit as without the bound."""
    from inertia_gpu.reference import Model
    cfg = make_config("quadratic", "heavy-ball", spectrum=[0.5, 4.2, 1.0], lr=0.5, momentum=0.3, noise=0.2,
                      steps=8)  # the stiff mode (lr lam = 2.1) oscillates near its limit: some trajectories cross
    free = TritonEnsemble(poison=True)
    bounded = TritonEnsemble(poison=True)
    cfg_b = dataclasses.replace(cfg)
    object.__setattr__(cfg_b, "diverge_above", 40.0)
    model64 = Model(dataclasses.replace(cfg, dtype="float64"))
    # the eigenvalues the float32 dynamics use, converted (the observables measure the simulated system)
    lam = torch.tensor(cfg.spectrum, dtype=torch.float32).double()[None, :]
    s_f = s_b = None
    gone = torch.zeros(N, dtype=torch.bool)
    saw_divergence = False
    for n in range(cfg.steps):
        s_f, _ = free.run(cfg, 0, N, n, n + 1, s_f)
        s_b, p_b = bounded.run(cfg_b, 0, N, n, n + 1, s_b if n else None)
        if n == 0:
            gone |= ~(s_f.inertia0 <= 40.0)  # step 0 is recorded too
        inertia = model64.observe(s_f.theta.double(), s_f.momentum.double(), lam)[0]
        gone |= ~(inertia <= 40.0)
        saw_divergence |= bool(gone.any())
        assert torch.isnan(s_b.theta[gone]).all() and torch.isnan(s_b.momentum[gone]).all()
        assert torch.equal(s_b.theta[~gone], s_f.theta[~gone]) and torch.equal(s_b.momentum[~gone], s_f.momentum[~gone])
        kept = (~gone).reshape(-1, 64)
        assert torch.equal(p_b[-1, :, 0], kept.sum(dim=1).double())
        want = torch.where(~gone, inertia, 0.0).reshape(-1, 64).sum(dim=1)
        torch.testing.assert_close(p_b[-1, :, 1], want, rtol=1e-12, atol=0)
        # the ledger: NaN with the state, left out of its sums; the kept trajectories' as without the bound
        assert torch.isnan(s_b.ledger[gone]).all() and torch.equal(s_b.ledger[~gone], s_f.ledger[~gone])
        for col, term in [(6, s_f.ledger[:, 0]), (7, s_f.ledger[:, 1])]:
            want = torch.where(~gone, term, 0.0).reshape(-1, 64).sum(dim=1)
            torch.testing.assert_close(p_b[-1, :, col], want, rtol=1e-12, atol=0)
    assert saw_divergence and not gone.all()


def test_kernel_copies_of_the_coefficient_layout():
    """kernels/ imports nothing of the library: its CONST_* / STEP_* copies must match coefficients.py."""
    from inertia_gpu import coefficients
    from inertia_gpu.kernels import ensemble
    for member in coefficients.Const:
        assert getattr(ensemble, f"CONST_{member.name}").value == int(member), member
    for member in coefficients.Step:
        assert getattr(ensemble, f"STEP_{member.name}").value == int(member), member
    assert ensemble.N_STEP_COLUMNS.value == coefficients.N_STEP


# --- the inertia ledger ------------------------------------------------------------------------------


def ledger_definition(cfg: SimulationConfig, start: int, count: int) -> np.ndarray:
    """[records, groups, 3] group sums of the cumulative (D, Q, W) of inertia_gpu/ledger.py (the executable
    definition, which follows the reference's state bit for bit)."""
    run = ledger_ref.simulate(cfg, start, count)
    terms = np.stack([run.dissipated, run.injected, run.residual], axis=-1)  # [records, count, 3]
    padded = np.zeros((terms.shape[0], -(-count // 64) * 64, 3))
    padded[:, :count] = terms
    return padded.reshape(terms.shape[0], -1, 64, 3).sum(axis=2), run


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("integrator,schedule,noise", [
    ("heavy-ball", "constant", "additive"),
    ("heavy-ball", "nesterov", "loss-scaled"),
    ("euler", "constant", "temperature"),
    ("leapfrog", "nesterov", "additive"),
    ("baoab", "constant", "loss-scaled"),
])
def test_ledger_matches_the_definition(integrator, schedule, noise, dtype):
    """Columns 6..8 and the carried (D, Q) against ledger.simulate, across a window cut inside a quad."""
    cfg = make_config("quadratic", integrator, schedule, noise, dtype=dtype, record_every=2)
    count = 100  # a ragged last group
    want, run = ledger_definition(cfg, 64, count)
    tri = TritonEnsemble(poison=True)
    s1, p1 = tri.run(cfg, 64, count, 0, 5, None)
    s2, p2 = tri.run(cfg, 64, count, 5, 11, s1)
    got = torch.cat([p1, p2]).cpu()
    assert got.shape == (len(cfg.recorded_steps), 2, N_COLUMNS) and not torch.isnan(got).any()
    assert_ledger_close(got, want, dtype, rel32=1e-6)  # quadratic, 11 steps: float32 rounding alone
    # the state carries the cumulative (D, Q) of each trajectory
    carried = torch.from_numpy(np.stack([run.dissipated[-1], run.injected[-1]], axis=-1))
    assert_state_close(s2.ledger.cpu(), carried, dtype, "the state's ledger")
    assert s2.ledger.dtype == torch.float64 and (s2.ledger[:, 0] > 0).all()  # friction removed energy


def test_ledger_of_wide_and_nonquadratic_layouts():
    for cfg, count in [(make_config("rosenbrock", "baoab", "nesterov", "temperature", dim=12, trajectories=80), 3),
                       (make_config("double-well", "heavy-ball", "constant", "loss-scaled", dtype="float64"), 64)]:
        want, _ = ledger_definition(cfg, 0, count)
        s, p = TritonEnsemble(poison=True).run(cfg, 0, count, 0, 7, None)
        s, p2 = TritonEnsemble(poison=True).run(cfg, 0, count, 7, 11, s)
        assert_ledger_close(torch.cat([p, p2]).cpu(), want, cfg.dtype, f"{cfg.problem} dim {cfg.dim}")


def test_noise_free_frictionless_heavy_ball_ledger_is_exactly_zero():
    """mu = 1 (no friction) and no noise: D = Q = 0 exactly; W is the whole change of inertia."""
    cfg = make_config("quadratic", "heavy-ball", momentum=1.0, noise=0.0, dtype="float64")
    s, p = TritonEnsemble(poison=True).run(cfg, 0, N, 0, 11, None)
    assert torch.equal(p[..., 6:8], torch.zeros_like(p[..., 6:8])) and torch.equal(s.ledger, torch.zeros_like(s.ledger))
    inertia0 = p[0, :, 1]
    torch.testing.assert_close(p[..., 8], p[..., 1] - inertia0, rtol=0, atol=1e-13 * float(inertia0.max()))


def test_ledger_bitwise_for_any_window_cut_and_chunking():
    cfg = make_config("quadratic", "leapfrog", "nesterov", "additive", trajectories=256, steps=13)
    tri = TritonEnsemble(poison=True)
    whole_state, whole = tri.run(cfg, 0, 256, 0, 13, None)
    for windows in ([(0, 3), (3, 4), (4, 13)], [(0, 6), (6, 9), (9, 13)]):
        for start, count in [(0, 128), (128, 128)]:
            s, parts = None, []
            for begin, end in windows:
                s, p = tri.run(cfg, start, count, begin, end, s)
                parts.append(p)
            g = slice(start // 64, (start + count) // 64)
            assert torch.equal(torch.cat(parts), whole[:, g]), (windows, start)
            assert torch.equal(s.ledger, whole_state.ledger[start:start + count]), (windows, start)


def test_ledger_off_writes_zeros_and_leaves_everything_else_bitwise():
    cfg = make_config("double-well", "heavy-ball", "nesterov", "additive", dim=2)
    off = dataclasses.replace(cfg, ledger=False).validate()
    assert triton_ensemble.ledger_on(cfg) and not triton_ensemble.ledger_on(off)
    tri = TritonEnsemble(poison=True)
    s_on, p_on = tri.run(cfg, 0, N, 0, 6, None)
    s_off, p_off = tri.run(off, 0, N, 0, 6, None)
    s_off, p_off2 = tri.run(off, 0, N, 6, 11, s_off)
    s_on, p_on2 = tri.run(cfg, 0, N, 6, 11, s_on)
    for a, b in [(p_on, p_off), (p_on2, p_off2)]:
        assert torch.equal(b[..., :N_QUANTITIES], a[..., :N_QUANTITIES])
        assert torch.equal(b[..., N_QUANTITIES:], torch.zeros_like(b[..., N_QUANTITIES:]))  # written: poisoned
    for name in ("theta", "momentum", "inertia0", "first_passage"):
        assert torch.equal(getattr(s_off, name), getattr(s_on, name)), name
    assert torch.equal(s_off.ledger, torch.zeros_like(s_off.ledger))


# --- the two passes: whole blocks without the divergence selects, then the flagged programs -------------


@pytest.mark.parametrize("integrator, ledger, bounded", [("heavy-ball", True, True), ("heavy-ball", False, True),
                                                         ("heavy-ball", True, False), ("leapfrog", True, True)])
def test_fast_pass_is_the_safe_pass_bit_for_bit(integrator, ledger, bounded):
    """Whole blocks run first without divergence selects (SAFE = False); a block in which a trajectory
    diverges, and the partial last block, run again on the SAFE path. The result must be the SAFE path's
    alone, bit for bit: states (NaN where diverged), I_0, first passage, ledger and every partial sum,
    over a first window and a resumed one, with and without the ledger. With the bound, divergence
    happens inside the whole blocks (the test checks it), so their first-pass outputs are discarded."""
    count, block = 549, 256  # two whole blocks (TPT 4 on 64 lanes) and a partial one
    cfg = make_config("quadratic", integrator, spectrum=[0.5, 4.2, 1.0], lr=0.5, momentum=0.3, noise=0.2,
                      dt=0.95, damping=0.05, steps=9, trajectories=count, ledger=ledger)
    bound = {"heavy-ball": 40.0, "leapfrog": 8.0}[integrator] if bounded else None  # some cross it, not all
    if bounded:
        object.__setattr__(cfg, "diverge_above", bound)
    fast = TritonEnsemble(block=block, num_warps=2, poison=True)
    safe = TritonEnsemble(block=block, num_warps=2, poison=True, fast=False)
    s_fast = s_safe = None
    for lo, hi in ((0, 5), (5, 9)):
        s_fast, p_fast = fast.run(cfg, 0, count, lo, hi, s_fast)
        s_safe, p_safe = safe.run(cfg, 0, count, lo, hi, s_safe)
        for name in ("theta", "momentum", "inertia0", "first_passage", "ledger"):
            got, want = getattr(s_fast, name), getattr(s_safe, name)
            torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True, msg=f"{name} [{lo}, {hi})")
        torch.testing.assert_close(p_fast, p_safe, rtol=0, atol=0, equal_nan=True, msg=f"partials [{lo}, {hi})")
    diverged = torch.isnan(s_safe.theta).any(dim=1)
    if bound is None:
        assert not diverged.any()
    else:
        assert diverged[:2 * block].any() and not diverged.all()


from inertia_gpu.kernels.philox import _log32, _sincos32, box_muller32  # noqa: E402


@triton.jit
def _float32_transform_parts(u1_ptr, u2_ptr, xa_ptr, xb_ptr, log_ptr, s_ptr, c_ptr, za_ptr, zb_ptr,
                             BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(log_ptr + i, _log32(tl.load(u1_ptr + i)))
    s, c = _sincos32(tl.load(u2_ptr + i) * 6.283185307179586)
    tl.store(s_ptr + i, s)
    tl.store(c_ptr + i, c)
    za, zb = box_muller32(tl.load(xa_ptr + i).to(tl.uint32), tl.load(xb_ptr + i).to(tl.uint32))
    tl.store(za_ptr + i, za)
    tl.store(zb_ptr + i, zb)


def _ulps(got, want):
    """|got - want| in units of the float32 spacing at |want| (the reference's float32 result)."""
    ulp = want.abs().nextafter(torch.tensor(math.inf, dtype=want.dtype)) - want.abs()
    return float(((got.double() - want.double()).abs() / ulp.double()).max())


def test_float32_transform_agrees_with_the_reference_to_a_few_ulps():
    """The float32 kernels' log, sin and cos (call-free, one shared reduction) against torch's, over every 64th
    value u1 and u2 take, the last 4096 values of u1 (log u1 -> 0) and every value next to a quadrant boundary,
    and the normals of box_muller32 against rng.box_muller on the same words: log within 1 ulp, sin and cos
    within 2 ulps of torch's float32 results (measured here: 1, 1 and 2; over all 2^24 values once: at most 1,
    2 and 2), the normals within 4 ulps (measured: 3) and 1e-6 absolute."""
    k1 = torch.cat([torch.arange(0, 1 << 24, 64), torch.arange((1 << 24) - 4096, 1 << 24)])
    k2 = torch.cat([torch.arange(0, 1 << 24, 64), *(torch.arange(-32, 33) + q * (1 << 22) for q in range(1, 4)),
                    torch.arange((1 << 24) - 64, 1 << 24)])
    n = max(k1.numel(), k2.numel())
    n += (-n) % 4096
    k1 = torch.cat([k1, torch.zeros(n - k1.numel(), dtype=k1.dtype)])
    k2 = torch.cat([k2, torch.zeros(n - k2.numel(), dtype=k2.dtype)])
    u1 = (k1 + 1).to(torch.float32) * 2.0 ** -24
    u2 = k2.to(torch.float32) * 2.0 ** -24
    gen = torch.Generator().manual_seed(2024)
    xa = torch.randint(0, 1 << 32, (n,), generator=gen, dtype=torch.int64)
    xb = torch.randint(0, 1 << 32, (n,), generator=gen, dtype=torch.int64)
    xa[: k1.numel()] = torch.where(torch.arange(n) % 2 == 0, (k1 << 8) | (xa & 0xFF), xa)  # u1 near 1 included
    outs = [torch.full((n,), math.nan, dtype=torch.float32) for _ in range(5)]
    _float32_transform_parts[(n // 4096,)](u1, u2, xa, xb, *outs, BLOCK=4096)
    log, s, c, za, zb = outs
    assert _ulps(log, torch.log(u1)) <= 1.0
    angle = (2.0 * math.pi) * u2
    assert _ulps(s, torch.sin(angle)) <= 2.0
    assert _ulps(c, torch.cos(angle)) <= 2.0
    want_a, want_b = rng.box_muller(xa, xb, torch.float32)
    for got, want in [(za, want_a), (zb, want_b)]:
        assert _ulps(got, want) <= 4.0
        assert float((got - want).abs().max()) <= 1e-6
