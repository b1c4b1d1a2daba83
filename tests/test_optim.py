"""InertiaSGD against torch.optim.SGD, the Philox reference stream and float64 bookkeeping.

The Triton kernel runs under the interpreter here (tests/conftest.py), on
tiny tensors with a large block so each step is a handful of programs.
"""
from __future__ import annotations

import itertools
import math
import secrets

import pytest
import torch

from inertia_gpu import rng
from inertia_gpu.optim import InertiaSGD

BLOCK = 256  # interpreter: few programs per step; sizes below straddle it
BACKENDS = ["foreach", "triton"]


def _fresh_seed(bits: int = 31) -> int:
    """A new seed every run (torch's global generator is seeded identically in every process)."""
    seed = secrets.randbelow(1 << bits)
    print(f"seed = {seed}")  # shown with a failure's captured output, to replay it
    return seed


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add contention (70x slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed: int, dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3)).to(dtype)


def _data(seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 6, generator=g, dtype=dtype)
    return x, torch.sin(x[:, :3]) + 0.1 * torch.randn(40, 3, generator=g, dtype=dtype)


def _objective(model, x, y, maximize: bool) -> torch.Tensor:
    mse = ((model(x) - y) ** 2).mean()
    return -mse if maximize else mse  # maximizing -mse trains the same model


def _groups(model, two_groups: bool, **second):
    if not two_groups:
        return model.parameters()
    first, last = list(model.children())[0], list(model.children())[-1]
    return [{"params": first.parameters()}, {"params": last.parameters(), **second}]


def _run(opt_cls, seed, steps, option, two_groups, scheduler, **extra):
    model = _mlp(seed)
    x, y = _data(seed + 1)
    second = {"lr": 0.03, "momentum": 0.5} if option["momentum"] else {"lr": 0.03}
    params = _groups(model, two_groups, **second)
    opt = opt_cls(params, **option, **extra)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.7) if scheduler else None
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = _objective(model, x, y, option.get("maximize", False))
            loss.backward()
            return loss
        opt.step(closure)
        if sched:
            sched.step()
    return model, opt


def _options():
    out = []
    for momentum, dampening, nesterov, wd, maximize in itertools.product(
            (0.0, 0.9), (0.0, 0.1), (False, True), (0.0, 1e-2), (False, True)):
        if nesterov and (momentum == 0 or dampening != 0):
            continue
        out.append(dict(lr=0.05, momentum=momentum, dampening=dampening, nesterov=nesterov,
                        weight_decay=wd, maximize=maximize))
    return out


OPTIONS = _options()


def _assert_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    err = (actual.double() - expected.double()).abs().max().item()
    scale = expected.double().abs().max().item()
    assert err <= rel * scale, f"max error {err:.3g} > {rel} x {scale:.3g}"


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k != "lr"))
@pytest.mark.parametrize("two_groups,scheduler", [(False, False), (True, True)])
def test_foreach_equals_torch_sgd_100_steps(option, two_groups, scheduler):
    seed = _fresh_seed()
    ref, _ = _run(torch.optim.SGD, seed, 100, option, two_groups, scheduler)
    got, _ = _run(InertiaSGD, seed, 100, option, two_groups, scheduler, backend="foreach")
    for a, b in zip(got.parameters(), ref.parameters()):
        _assert_rel(a.detach(), b.detach(), 1e-5)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k != "lr"))
def test_foreach_is_bitwise_torch_sgd_foreach(option):
    """Without noise the foreach implementation is torch.optim.SGD(foreach=True)'s op sequence: equal bitwise."""
    seed = _fresh_seed()
    ref, ref_opt = _run(torch.optim.SGD, seed, 30, option, True, True, foreach=True)
    got, opt = _run(InertiaSGD, seed, 30, option, True, True, backend="foreach")
    for a, b in zip(got.parameters(), ref.parameters()):
        assert torch.equal(a, b)
        if option["momentum"]:
            assert torch.equal(opt.state[a]["momentum_buffer"], ref_opt.state[b]["momentum_buffer"])


def test_functional_none_buffers_are_torch_first_step():
    """inertia_sgd's one "no buffer yet" is None, as torch.optim.sgd.sgd's: the step fills it with b = g."""
    from torch.optim.sgd import sgd

    from inertia_gpu.optim import inertia_sgd
    g = torch.Generator().manual_seed(_fresh_seed())
    params = [torch.randn(n, generator=g) for n in (3, 17)]
    grads = [torch.randn(n, generator=g) for n in (3, 17)]
    mine, theirs = [p.clone() for p in params], [p.clone() for p in params]
    bufs_mine, bufs_theirs = [None, None], [None, None]
    kw = dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01, nesterov=False, maximize=False)
    for _ in range(3):
        step = torch.tensor(0)
        inertia_sgd(mine, grads, bufs_mine, step=step, impl="foreach", **kw)
        sgd(theirs, grads, bufs_theirs, foreach=True, **kw)
        assert int(step) == 1
        for a, b, ba, bb in zip(mine, theirs, bufs_mine, bufs_theirs):
            assert torch.equal(a, b) and torch.equal(ba, bb)


@pytest.mark.parametrize("option", OPTIONS[::3] + [OPTIONS[-1]],
                         ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items() if k != "lr"))
def test_triton_equals_torch_sgd(option):
    seed = _fresh_seed()
    ref, _ = _run(torch.optim.SGD, seed, 25, option, True, True)
    got, _ = _run(InertiaSGD, seed, 25, option, True, True, backend="triton", block=BLOCK)
    for a, b in zip(got.parameters(), ref.parameters()):
        _assert_rel(a.detach(), b.detach(), 1e-5)


def _tensors(sizes, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=g, dtype=dtype) for n in sizes]


@pytest.mark.parametrize("sizes", [[1], [7, 13], [BLOCK + 1, 1, 2 * BLOCK + 3], [4, 5, 6, 97]])
@pytest.mark.parametrize("option", [
    dict(momentum=0.9, dampening=0.1, weight_decay=0.02, noise=0.3),
    dict(momentum=0.8, nesterov=True, maximize=True, temperature=0.01),
    dict(momentum=0.0, weight_decay=0.05, noise=0.1),
])
def test_triton_kernel_equals_foreach(sizes, option):
    seed = _fresh_seed()
    results = {}
    for backend in BACKENDS:
        params = [t.clone().requires_grad_() for t in _tensors(sizes, seed)]
        extra = [torch.randn(3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
                 .requires_grad_()]  # a second dtype in the same group: a second launch
        opt = InertiaSGD([{"params": params}, {"params": extra, "lr": 0.02}], lr=0.1, seed=seed % 1000,
                         backend=backend, block=BLOCK, **option)
        grads = _tensors(sizes + [15], seed + 7)
        for step in range(3):
            for p, g in zip(params + extra, grads):
                p.grad = (g * (1 + step)).reshape(p.shape).to(p.dtype)
            opt.step(loss=torch.tensor(1.5))
        results[backend] = ([p.detach().clone() for p in params + extra],
                            [opt.state[p].get("momentum_buffer") for p in params + extra],
                            torch.stack([opt.kinetic, opt.inertia, opt.shadow_inertia]))
    (pf, bf, sf), (pt, bt, st) = results["foreach"], results["triton"]
    for a, b in zip(pt, pf):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(bt, bf):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st, sf, rtol=1e-6, atol=1e-9)


def test_kernel_noise_equals_reference_stream():
    """No buffers yet, zero gradients: the step creates each buffer and must write every element, b = xi.

    Same Philox words bit for bit; the normals differ by at most a few ulp
    (numpy's and torch's log/cos/sin), hence rtol 1e-6 (~8 float32 ulp).
    """
    from inertia_gpu.optim import inertia_sgd
    sizes, indices, step, seed = [1, 5, BLOCK + 3, 2 * BLOCK], [4, 0, 11, 2**20 + 1], 9, 2**40 + 12345
    params = [torch.zeros(n) for n in sizes]
    grads = [torch.zeros(n) for n in sizes]
    buffers = [None] * len(sizes)
    counter = torch.tensor(step)
    inertia_sgd(params, grads, buffers, step=counter, parameter_index=indices, lr=1.0, momentum=0.5,
                noise=1.0, seed=seed, impl="triton", block=BLOCK)
    assert int(counter) == step + 1
    for n, i, b, p in zip(sizes, indices, buffers, params):
        ref = rng.optimizer_normals(n, step, i, seed, torch.float32)
        torch.testing.assert_close(b, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(p, -ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_noise_in_element_order_for_16_bit_parameters(dtype):
    """16-bit tiles hold eight elements per thread, two Philox calls: each normal must land on its element."""
    from inertia_gpu.optim import inertia_sgd
    seed, step, sizes = _fresh_seed(), 3, [8, 13, 2 * BLOCK + 24]
    params = [torch.zeros(n, dtype=dtype) for n in sizes]
    buffers = [None] * len(sizes)
    inertia_sgd(params, [torch.zeros_like(p) for p in params], buffers, step=torch.tensor(step),
                lr=1.0, momentum=0.9, noise=1.0, seed=seed, impl="triton", block=BLOCK)
    for i, (b, n) in enumerate(zip(buffers, sizes)):
        ref = rng.optimizer_normals(n, step, i, seed, torch.float32)
        torch.testing.assert_close(b.float(), ref.to(dtype).float(), rtol=1e-2, atol=1e-2)  # one 16-bit rounding
        assert (b.float() - ref).abs().max() <= 2 ** -7 * ref.abs().max()


def test_kernel_normal_transform_agrees_with_the_reference_to_a_few_ulp():
    """The kernel's float32 sin/cos (Cody-Waite + polynomials) against torch's, on 2**18 normals."""
    from inertia_gpu.optim import inertia_sgd
    n, seed = 1 << 18, _fresh_seed()
    p, buffers = [torch.zeros(n)], [None]
    inertia_sgd(p, [torch.zeros(n)], buffers, step=torch.tensor(0), lr=1.0, momentum=0.5, noise=1.0, seed=seed,
                impl="triton", block=n)
    ref = rng.optimizer_normals(n, 0, 0, seed, torch.float32).double()
    err = (buffers[0].double() - ref).abs()
    ulp = torch.finfo(torch.float32).eps * torch.maximum(ref.abs(), torch.tensor(1.0, dtype=torch.float64))
    assert (err / ulp).max().item() <= 8  # both round the angle 2 pi u2 the same way; then ~1 ulp apart


def test_aligned_and_unaligned_tensors_share_a_step():
    """Views one element off 16 bytes go to the fallback launch, the rest to the 128-bit one: all equal foreach."""
    from inertia_gpu.optim import inertia_sgd
    seed = _fresh_seed()
    g = torch.Generator().manual_seed(seed)
    storage = torch.randn(4 * BLOCK, generator=g)
    results = []
    for impl in ("foreach", "triton"):
        base = storage.clone()
        # aligned; one element off (fallback); aligned with numel not a multiple of 4 (fallback); its own
        params = [base[: 2 * BLOCK], base[2 * BLOCK + 1: 3 * BLOCK + 1], base[3 * BLOCK + 4:], torch.arange(7.0)]
        grads = [torch.cos(p) for p in params]
        buffers = [None] * len(params)
        for t in range(2):
            sums = inertia_sgd(params, grads, buffers, step=torch.tensor(t), lr=0.1, momentum=0.9, noise=0.2,
                               seed=seed, impl=impl, block=BLOCK)
        results.append((base, params[3], buffers, sums))
    (b0, q0, f0, s0), (b1, q1, f1, s1) = results
    torch.testing.assert_close(b1, b0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q1, q0, rtol=1e-6, atol=1e-6)
    for x, y in zip(f1, f0):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(s1, s0, rtol=1e-6, atol=0)  # the states differ by rounding after one step


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimizer_noise_keyed_by_step_and_parameter(backend):
    """Noise of step t on parameter index i (over all groups) is optimizer_normals(numel, t, i)."""
    seed = _fresh_seed(32)
    sizes = [3, 10, BLOCK + 1]
    params = [torch.zeros(n, requires_grad=True) for n in sizes]
    opt = InertiaSGD([{"params": params[:1]}, {"params": params[1:], "noise": 0.5}],
                     lr=1.0, noise=2.0, seed=seed, backend=backend, block=BLOCK)
    for step in range(3):
        before = [p.detach().clone() for p in params]
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        for i, (p, b, std) in enumerate(zip(params, before, (2.0, 0.5, 0.5))):
            ref = std * rng.optimizer_normals(p.numel(), step, i, seed, torch.float32)
            torch.testing.assert_close(b - p.detach(), ref, rtol=1e-5, atol=1e-6)


def test_temperature_sets_noise_std():
    lr, momentum, temperature = 0.04, 0.7, 0.3
    runs = []
    for kw in (dict(temperature=temperature), dict(noise=(2 * (1 - momentum) * temperature / lr) ** 0.5)):
        p = torch.ones(11, requires_grad=True)
        opt = InertiaSGD([p], lr=lr, momentum=momentum, seed=5, backend="foreach", **kw)
        for _ in range(3):
            p.grad = p.detach().clone()
            opt.step()
        runs.append(p.detach())
    torch.testing.assert_close(runs[0], runs[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_inertia_equals_float64_bookkeeping(backend):
    """kinetic, inertia, shadow of step k use b_k (buffer before the update) and the noise-free d_k."""
    model = _mlp(_fresh_seed())
    x, y = _data(3)
    groups = _groups(model, True, lr=0.02, momentum=0.5, weight_decay=0.03)
    opt = InertiaSGD(groups, lr=0.05, momentum=0.9, maximize=False, noise=0.05, backend=backend, block=BLOCK)
    for step in range(4):
        opt.zero_grad()
        loss = _objective(model, x, y, False)
        loss.backward()
        kinetic = correction = 0.0
        for group in opt.param_groups:
            for p in group["params"]:
                b = opt.state[p].get("momentum_buffer")
                if b is None:
                    continue
                b64 = b.double()
                d64 = p.grad.double() + group["weight_decay"] * p.detach().double()
                kinetic += 0.5 * group["lr"] * (b64 * b64).sum().item()
                correction += 0.5 * group["lr"] * (b64 * d64).sum().item()
        opt.step(loss=loss)
        # both sum exact float64 products of the float32 values (only the order of the sums differs)
        rel = 1e-12
        if step == 0:
            assert opt.kinetic.item() == 0.0
        else:
            assert opt.kinetic.item() == pytest.approx(kinetic, rel=rel)
        assert opt.inertia.item() == pytest.approx(kinetic + loss.item(), rel=rel)
        assert opt.shadow_inertia.item() == pytest.approx(kinetic + loss.item() + correction, rel=rel, abs=1e-12)
        assert opt.kinetic.dtype == torch.float64 and opt.group_kinetic.shape == (2,)
    hist = opt.history.as_numpy()
    assert len(hist["inertia"]) == 4 and hist["inertia"][-1] == opt.inertia.item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("maximize,weight_decay,scale", [(False, 0.0, None), (True, 0.03, 3.0), (True, 0.0, 0.5)])
def test_cpu_inertia_sums_are_exact_float64(dtype, maximize, weight_decay, scale):
    """The CPU sums (numba kernel; a non-contiguous tensor takes the torch slices) against float64 by hand."""
    from inertia_gpu.optim.foreach_step import inertia_sums
    g = torch.Generator().manual_seed(_fresh_seed())
    sizes = [1, 3, 40_000, 70_001]
    bufs = [torch.randn(n, generator=g, dtype=dtype) * 10.0 ** k for k, n in enumerate(sizes)]
    bufs.append(torch.randn(64, 9, generator=g, dtype=dtype).t())  # non-contiguous
    grads = [torch.randn(b.shape, generator=g, dtype=dtype) for b in bufs]
    params = [torch.randn(b.shape, generator=g, dtype=dtype) for b in bufs]
    got = inertia_sums(bufs + [None], grads + [grads[0]], params + [params[0]], maximize=maximize,
                       weight_decay=weight_decay, grad_scale=None if scale is None else torch.tensor(scale))
    want = [0.0, 0.0]
    for b, gr, p in zip(bufs, grads, params):
        b64, d = b.double().reshape(-1), gr.double().reshape(-1) * (-1.0 if maximize else 1.0)
        d = d / (scale or 1.0) + weight_decay * p.double().reshape(-1)
        want[0] += float((b64 * b64).sum())
        want[1] += float((b64 * d).sum())
    assert got.dtype == torch.float64
    assert got[0].item() == pytest.approx(want[0], rel=1e-13)
    assert got[1].item() == pytest.approx(want[1], rel=1e-12, abs=1e-12 * want[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("option", [
    dict(momentum=0.9, dampening=0.1, weight_decay=0.02, noise=0.3),
    dict(momentum=0.8, nesterov=True, maximize=True, noise=0.05),
    dict(momentum=0.0, weight_decay=0.05, noise=0.1),
    dict(momentum=0.7),
], ids=["dampened", "nesterov-maximize", "no-momentum", "noise-free"])
def test_fused_cpu_step_equals_float64_by_hand(dtype, option):
    """The CPU's one-pass step (kernels/sgd_cpu.fused_steps, any thread count) against float64 by hand from
    the same inputs: params and buffers to the working dtype's rounding, the sums exactly, the noise the
    reference stream's (rng.optimizer_normals, to a few ulp: polynomial log/sin/cos)."""
    numba = pytest.importorskip("numba")
    from inertia_gpu.optim.foreach_step import _fused_cpu_ready
    from inertia_gpu.optim.functional import inertia_sgd
    seed = _fresh_seed()
    g = torch.Generator().manual_seed(seed)
    sizes = [1, 5, 515, 16384 + 517, 3 * 16384 + 2]  # across the kernel's inner passes and its thread blocks
    lr, mu, tau = 0.05, option["momentum"], option.get("dampening", 0.0)
    wd, s, sign = option.get("weight_decay", 0.0), option.get("noise", 0.0), -1.0 if option.get("maximize") else 1.0
    params = [torch.randn(n, generator=g, dtype=dtype) for n in sizes]
    grads = [torch.randn(n, generator=g, dtype=dtype) * 10.0 ** (k - 2) for k, n in enumerate(sizes)]
    buffers = [None if k == 1 else torch.randn(n, generator=g, dtype=dtype) for k, n in enumerate(sizes)]
    index, step = [3 * k + 1 for k in range(len(sizes))], 5 + secrets.randbelow(1000)
    assert _fused_cpu_ready(params, grads, [b for b in buffers], mu, lr, s, None)
    want_p, want_b, want = [], [], [0.0, 0.0, 0.0]
    for k, (p, gr, b) in enumerate(zip(params, grads, buffers)):
        p64, b64 = p.double(), None if b is None or mu == 0 else b.double()
        d = sign * gr.double() + wd * p64
        xi = rng.optimizer_normals(p.numel(), step, index[k], seed, dtype).double()
        dn = d + s * xi
        if mu == 0:
            u = dn
        else:
            q = (s if b64 is None else (1 - tau) * s) * xi
            want[2] += float((q * q).sum()) + (0.0 if b64 is None else 2 * mu * float((b64 * q).sum()))
            if b64 is not None:
                want[0] += float((b64 * b64).sum())
                want[1] += float((b64 * d).sum())
            nb = dn if b64 is None else mu * b64 + (1 - tau) * dn
            want_b.append(nb)
            u = dn + mu * nb if option.get("nesterov") else nb
        want_p.append(p64 - lr * u)
    results = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        ps, bs = [p.clone() for p in params], [None if b is None else b.clone() for b in buffers]
        sums = inertia_sgd(ps, [gr.clone() for gr in grads], bs if mu != 0 else [], step=torch.tensor(step),
                           parameter_index=index, lr=lr, seed=seed, **option)
        results.append((ps, bs, sums))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    ps, bs, sums = results[0]
    for other_ps, other_bs, other_sums in results[1:]:  # the thread count changes no bit
        assert all(torch.equal(a, c) for a, c in zip(ps, other_ps)) and torch.equal(sums, other_sums)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for got, exp in zip(ps, want_p):
        torch.testing.assert_close(got.double(), exp, rtol=rtol, atol=rtol)
    if mu != 0:
        for got, exp in zip(bs, want_b):
            torch.testing.assert_close(got.double(), exp, rtol=rtol, atol=rtol)
    assert sums[0].item() == pytest.approx(want[0], rel=1e-13)
    assert sums[1].item() == pytest.approx(want[1], rel=1e-12, abs=1e-12 * want[0])
    assert sums[2].item() == pytest.approx(want[2], rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_fused_cpu_step_writes_a_new_buffer_everywhere():
    """A new buffer (torch's first step b = d) is written in full: a NaN-poisoned one comes back finite."""
    pytest.importorskip("numba")
    import numpy as np
    from inertia_gpu.kernels import sgd_cpu
    n = 3 * 16384 + 7
    p, g = np.random.default_rng(_fresh_seed()).standard_normal((2, n)).astype(np.float32)
    b = np.full(n, np.nan, dtype=np.float32)
    out = np.zeros(3)
    sgd_cpu.fused_step(p, g.copy(), b, 0.1, 0.9, 0.0, 0.0, False, False, 0.0, True, 0, 0, rng.TAG_OPTIMIZER, 0, 0, out)
    np.testing.assert_array_equal(b, g)
    assert out[0] == 0.0 and out[1] == 0.0 and out[2] == 0.0


def test_cpu_noise_lanes_give_the_reference_words_and_normals():
    """kernels/normals_cpu (Philox with unmasked high halves, the FMA float32 transform) against the torch
    reference: the same words on random counters and keys; the float32 normals of groups past 2**32 (the
    counter's carry into c3) to a few ulp. (float64 draws through cpu_ensemble's transform: the fused step
    tests check them.)"""
    pytest.importorskip("numba")
    import numpy as np
    from inertia_gpu.kernels import normals_cpu
    seed = _fresh_seed(64)
    g = torch.Generator().manual_seed(seed & 0x7FFFFFFF)
    k0, k1 = rng.seed_key(seed)
    c = torch.randint(0, 1 << 32, (4, 4096), generator=g, dtype=torch.int64)
    want = torch.stack(rng.philox4x32(*c, k0, k1), dim=-1).numpy()
    np.testing.assert_array_equal(normals_cpu.philox_words(*c.numpy(), k0, k1).astype(np.int64), want)
    group0 = int(torch.randint(0, 1 << 34, (), generator=g))
    step, parameter = 1 + secrets.randbelow(1 << 31), secrets.randbelow(1 << 20)
    groups = group0 + torch.arange(1 << 14, dtype=torch.int64)
    z = np.full(4 * groups.numel(), np.nan, dtype=np.float32)
    normals_cpu.normals(z, group0, step, parameter, rng.TAG_OPTIMIZER, k0, k1)
    ref = rng.normals4(groups & rng.MASK32, step, parameter, rng.TAG_OPTIMIZER + (groups >> 32) * 16, seed,
                       torch.float32).reshape(-1).double()
    ulp = torch.finfo(torch.float32).eps * torch.maximum(ref.abs(), torch.tensor(1.0, dtype=torch.float64))
    assert ((torch.from_numpy(z).double() - ref).abs() / ulp).max().item() <= 8


@pytest.mark.parametrize("backend,dtype,steps,rel", [("foreach", torch.float64, 1000, 1e-10),
                                                      ("triton", torch.float32, 1000, 1e-5)])
def test_frictionless_heavy_ball_conserves_shadow_inertia(backend, dtype, steps, rel):
    g = torch.Generator().manual_seed(_fresh_seed())
    lam = (0.5 + 2.5 * torch.rand(17, generator=g)).to(dtype)
    theta = torch.randn(17, generator=g, dtype=dtype).requires_grad_()
    opt = InertiaSGD([theta], lr=0.01, momentum=1.0, backend=backend, block=BLOCK)
    shadow, inertia = [], []
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = 0.5 * (lam * theta * theta).sum()
            loss.backward()
            return loss
        opt.step(closure)
        shadow.append(opt.shadow_inertia)
        inertia.append(opt.inertia)
    shadow, inertia = torch.stack(shadow), torch.stack(inertia)
    assert ((shadow - shadow[0]).abs().max() / shadow[0]).item() < rel
    assert ((inertia.max() - inertia.min()) / inertia[0]).item() > 1e-3  # plain inertia oscillates


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_round_trip_with_torch_sgd(backend):
    option = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)
    seed = _fresh_seed()
    x, y = _data(seed + 1)
    ref = _mlp(seed)
    ref_opt = torch.optim.SGD(ref.parameters(), **option)
    model = _mlp(seed)
    kinds = [InertiaSGD, torch.optim.SGD, InertiaSGD]
    opt = None
    for phase, kind in enumerate(kinds):
        new = kind(model.parameters(), **option, **({"backend": backend, "block": BLOCK} if kind is InertiaSGD else {}))
        if opt is not None:
            new.load_state_dict(opt.state_dict())
        opt = new
        for _ in range(6):
            for m, o in ((ref, ref_opt), (model, opt)):
                o.zero_grad()
                _objective(m, x, y, False).backward()
                o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        _assert_rel(a.detach(), b.detach(), 1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf gradients of the skipped step
@pytest.mark.parametrize("backend", BACKENDS)
def test_amp_skipped_first_step_leaves_everything_untouched(backend):
    """found_inf skips the step (buffers too: the next applied step is torch's first, b = g)."""
    option = dict(lr=0.1, momentum=0.9, dampening=0.3)
    p = torch.randn(9, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    opt = InertiaSGD([p], backend=backend, block=BLOCK, **option)
    ref = torch.optim.SGD([q], **option)
    scale = torch.tensor(8.0)
    p.grad = torch.full((9,), float("inf"))
    opt.grad_scale, opt.found_inf = scale, torch.tensor(1.0)
    start = p.detach().clone()
    opt.step()
    assert torch.equal(p.detach(), start)
    buf = opt.state[p].get("momentum_buffer")
    assert buf is None or torch.equal(buf, torch.zeros(9))
    for k in range(3):
        grad = torch.randn(9)
        p.grad, q.grad = grad * scale, grad
        opt.found_inf = torch.tensor(0.0)
        opt.step()
        ref.step()
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"])


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_skipped_first_step_then_torch_sgd_first_step(backend):
    """GradScaler on the CPU, first step's gradients infinite: parameters bitwise unchanged, no buffer made,
    `stepped` False; the next step equals torch.optim.SGD's first step (bitwise on the foreach path)."""
    seed = _fresh_seed()
    x, y = _data(seed + 1)
    option = dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=1e-3)
    model, ref = _mlp(seed), _mlp(seed)
    opt = InertiaSGD(model.parameters(), backend=backend, block=BLOCK, **option)
    sgd = torch.optim.SGD(ref.parameters(), **option)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    start = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    scaler.scale(_objective(model, x, y, False) * 1e35).backward()  # overflows: inf gradients
    scaler.step(opt)
    scaler.update()
    assert not bool(opt.stepped) and scaler.get_scale() == 2.0 ** 15
    assert all(torch.equal(p.detach(), s) for p, s in zip(model.parameters(), start))
    assert all("momentum_buffer" not in opt.state.get(p, {}) for p in model.parameters())
    assert all(int(g["step"]) == 0 for g in opt.param_groups)
    opt.zero_grad()
    scaler.scale(_objective(model, x, y, False)).backward()
    scaler.step(opt)
    sgd.zero_grad()
    _objective(ref, x, y, False).backward()
    sgd.step()
    assert bool(opt.stepped)
    for p, q in zip(model.parameters(), ref.parameters()):
        if backend == "foreach":
            assert torch.equal(p, q) and torch.equal(opt.state[p]["momentum_buffer"], sgd.state[q]["momentum_buffer"])
        else:  # the interpreter rounds p - lr * b in two operations where torch fuses them
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_effective_temperature_is_two_kinetic_over_size():
    a, b = torch.zeros(6, requires_grad=True), torch.zeros(4, requires_grad=True)
    opt = InertiaSGD([{"params": [a]}, {"params": [b], "lr": 0.2}], lr=0.1, momentum=0.9, backend="foreach")
    for k in range(3):
        a.grad, b.grad = torch.full((6,), 1.0 + k), torch.full((4,), 2.0 - k)
        opt.step(loss=0.0)
    assert opt.effective_temperature.dtype == torch.float64 and opt.effective_temperature.shape == (2,)
    # the third step reports the state it started from: b_2 = 0.9 g_0 + g_1
    b2 = [0.9 * torch.full((6,), 1.0) + 2.0, 0.9 * torch.full((4,), 2.0) + 1.0]
    for t, lr, b2_, n in zip(opt.effective_temperature, (0.1, 0.2), b2, (6, 4)):
        assert t.item() == pytest.approx(lr * float((b2_.double() ** 2).sum()) / n, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lr_tensor_equals_float(backend):
    out = []
    for lr in (0.07, torch.tensor(0.07)):
        p = torch.linspace(-1, 1, 13).requires_grad_()
        opt = InertiaSGD([p], lr=lr, momentum=0.9, backend=backend, block=BLOCK)
        for _ in range(3):
            p.grad = torch.cos(p.detach())
            opt.step(loss=0.0)
        out.append((p.detach(), opt.kinetic))
    torch.testing.assert_close(out[0][0], out[1][0])
    torch.testing.assert_close(out[0][1], out[1][1])


@pytest.mark.parametrize("kwargs,word", [
    (dict(lr=-0.1), "lr"), (dict(momentum=1.5), "momentum"), (dict(momentum=-0.1), "momentum"),
    (dict(nesterov=True), "nesterov"), (dict(momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
    (dict(weight_decay=-1.0), "weight_decay"), (dict(noise=-1.0), "noise"),
    (dict(noise=0.1, temperature=1.0), "temperature"), (dict(backend="cuda-magic"), "backend"),
    (dict(seed=-1), "seed"), (dict(differentiable=True), "differentiable"),
])
def test_invalid_options_raise(kwargs, word):
    with pytest.raises(ValueError, match=word):
        InertiaSGD([torch.zeros(3, requires_grad=True)], **{"lr": 0.1, **kwargs})


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_and_complex_gradients_raise(backend):
    p = torch.zeros(4, requires_grad=True)
    opt = InertiaSGD([p], lr=0.1, backend=backend)
    p.grad = torch.zeros(4).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    c = torch.zeros(4, dtype=torch.complex64, requires_grad=True)
    c.grad = torch.zeros(4, dtype=torch.complex64)
    with pytest.raises(ValueError, match="complex"):
        InertiaSGD([c], lr=0.1, backend=backend).step()


@pytest.mark.gpu
@pytest.mark.parametrize("sizes", [[1, 4097, 12289], [768] * 50 + [3 * 768 * 768]])
def test_cuda_triton_equals_foreach(sizes):
    seed = _fresh_seed()
    results = []
    for backend in BACKENDS:
        params = [t.cuda().requires_grad_() for t in _tensors(sizes, seed)]
        opt = InertiaSGD(params, lr=0.01, momentum=0.9, weight_decay=1e-3, noise=0.1, seed=seed, backend=backend)
        for step in range(3):
            for p, g in zip(params, _tensors(sizes, seed + step + 1)):
                p.grad = g.cuda()
            opt.step(loss=torch.tensor(2.0, device="cuda"))
        results.append((torch.cat([p.detach().reshape(-1) for p in params]), opt.shadow_inertia))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-6, atol=0)


@pytest.mark.gpu
def test_cuda_graph_capture_replays_steps():
    """lr as a tensor, static gradients: a captured step replays like eager steps, no host sync inside."""
    seed = _fresh_seed()
    g = torch.Generator(device="cuda").manual_seed(seed)
    p = torch.randn(5000, device="cuda", generator=g).requires_grad_()
    q = p.detach().clone().requires_grad_()
    opt = InertiaSGD([p], lr=torch.tensor(0.05, device="cuda"), momentum=0.9, noise=0.01, seed=seed,
                     backend="triton")
    ref = InertiaSGD([q], lr=0.05, momentum=0.9, noise=0.01, seed=seed, backend="triton")
    loss = torch.zeros((), device="cuda")
    p.grad = torch.zeros_like(p)

    def graph_step():
        p.grad.copy_(torch.cos(p.detach()))
        opt.step(loss=loss)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            graph_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_step()
    for _ in range(5):
        graph.replay()
    for _ in range(7):
        q.grad = torch.cos(q.detach())
        ref.step(loss=loss)
    torch.cuda.synchronize()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(opt.kinetic, ref.kinetic, rtol=1e-6, atol=0)
    assert int(opt.param_groups[0]["step"]) == 7


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_scaler_with_overflowing_steps_equals_torch_sgd(backend):
    """A real GradScaler whose first steps overflow: skipped steps must not touch params or buffers."""
    seed = _fresh_seed()
    x, y = _data(seed + 1)
    option = dict(lr=5e-4, momentum=0.9, dampening=0.2, weight_decay=1e-3)  # lr x 100 objective: tame
    runs = []
    for make in (lambda ps: torch.optim.SGD(ps, **option),
                 lambda ps: InertiaSGD(ps, backend=backend, block=BLOCK, **option)):
        model = _mlp(seed)
        opt = make(model.parameters())
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, growth_interval=1000)
        for _ in range(16):  # the first steps overflow (inf gradients) until the scale has backed off
            opt.zero_grad()
            scaler.scale(100 * _objective(model, x, y, False)).backward()
            scaler.step(opt)
            scaler.update()
        assert 2.0 ** 100 < scaler.get_scale() < 2.0 ** 124  # some steps skipped, most applied
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(runs[1], runs[0]):
        _assert_rel(a, b, 1e-6)


def test_example_trains_and_plots(tmp_path):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "examples" / "train_mlp.py"
    spec = importlib.util.spec_from_file_location("train_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "plot.png"
    history = module.main(["--steps", "40", "--out", str(out)])
    assert out.stat().st_size > 0 and len(history["inertia"]) == 40
    assert history["loss"][-1] < history["loss"][0]
    assert (history["inertia"] >= history["loss"]).all()


_COMPILE_SCRIPT = r"""
import json, os, re, subprocess, sys, tempfile
import torch, triton
from triton.backends.compiler import GPUTarget
from inertia_gpu.optim.triton_step import sgd_ast_source, sgd_launch_spec
BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
out = []
for dtype, momentum, noise, aligned in [(torch.float32, True, True, True), (torch.bfloat16, True, True, True),
                                        (torch.float32, True, True, False), (torch.float64, True, False, True)]:
    spec = sgd_launch_spec(dtype, momentum, noise, aligned=aligned)
    kernel = triton.compile(sgd_ast_source(spec), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=spec["num_warps"], enable_fp_fusion=spec["enable_fp_fusion"]))
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    usage = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
    sass = subprocess.run([os.path.join(BIN, "nvdisasm"), "-c", f.name], capture_output=True, text=True).stdout
    out.append(dict(variant=f"{dtype} momentum={momentum} noise={noise} aligned={aligned}", aligned=aligned,
                    registers=int(re.search(r"REG:(\d+)", usage).group(1)),
                    local_bytes=int(re.search(r"LOCAL:(\d+)", usage).group(1)),
                    ldg128=len(re.findall(r"LDG\.E\.128", sass)), stg128=len(re.findall(r"STG\.E\.128", sass))))
print(json.dumps(out))
"""


def test_kernel_compiles_for_sm90_with_128_bit_access_and_two_programs_per_sm(tmp_path):
    """Compiled for sm_90 without a GPU (the interpreter accepts code the GPU compiler refuses):
    at most 128 registers (two 8-warp programs per SM), no spills, and 128-bit loads and stores in the
    aligned variants (the fallback for unaligned tensors must compile too)."""
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path), TRITON_DEFAULT_FP_FUSION="1")
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    if run.returncode != 0 and ("ptxas" in run.stderr and "not found" in run.stderr.lower()):
        pytest.skip("triton's bundled ptxas is not available")
    assert run.returncode == 0, run.stderr[-3000:]
    for v in json.loads(run.stdout.splitlines()[-1]):
        print(v)
        assert v["registers"] <= 128 and v["local_bytes"] == 0, v
        if v["aligned"]:
            assert v["ldg128"] > 0 and v["stg128"] > 0, v


def _ledger_run(backend, seed, steps=4, **option):
    model = _mlp(seed)
    x, y = _data(seed + 1)
    opt = InertiaSGD(model.parameters(), backend=backend, block=BLOCK, seed=seed % 997, **option)
    rows, inertia = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = _objective(model, x, y, False)
        loss.backward()
        opt.step(loss=loss)
        inertia.append(opt.inertia.item())
        rows.append({k: v.item() for k, v in opt.ledger.items()})
    return rows, inertia


@pytest.mark.parametrize("backend", BACKENDS)
def test_ledger_balances_and_the_backends_agree(backend):
    """residual closes I_{k+1} - I_k = -D + Q + W; D = (1 - mu^2) K >= 0; Triton's terms equal foreach's."""
    option = dict(lr=0.05, momentum=0.8, dampening=0.1, noise=0.3)
    seed = _fresh_seed()
    rows, inertia = _ledger_run(backend, seed, **option)
    assert all(math.isnan(v) for v in rows[0].values())  # no applied step is complete yet
    for k in range(1, len(rows)):
        r = rows[k]
        assert r["dissipated"] >= 0 and r["injected"] != 0
        assert inertia[k] - inertia[k - 1] == pytest.approx(-r["dissipated"] + r["injected"] + r["residual"],
                                                            rel=1e-12, abs=1e-12)
    if backend == "triton":
        ref, ref_inertia = _ledger_run("foreach", seed, **option)  # same model, same noise stream
        for got, want, scale in zip(rows[1:], ref[1:], ref_inertia[1:]):
            for key in ("dissipated", "injected"):
                assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7), key
            # the residual is a difference of energies: the two backends' float32 states (normals a few ulps
            # apart) move it by 1e-5 of those energies, not of the residual itself
            terms = abs(want["dissipated"]) + abs(want["injected"]) + abs(scale)
            assert got["residual"] == pytest.approx(want["residual"], abs=1e-5 * terms + 1e-7)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ledger_frictionless_noise_free_heavy_ball_dissipates_and_injects_nothing(backend):
    rows, _ = _ledger_run(backend, _fresh_seed(), lr=0.02, momentum=1.0)
    assert all(r["dissipated"] == 0.0 and r["injected"] == 0.0 for r in rows[1:])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ledger_injected_mean_is_half_lr_s2_d(backend):
    """Zero gradients, existing buffers: Q = lr/2 (2 mu <b, q> + |q|^2), q = (1 - tau) s xi, so
    E[Q] = lr/2 (1 - tau)^2 s^2 d, Var = (lr/2)^2 (4 mu^2 c^2 s^2 |b|^2 + 2 c^4 s^4 d); z < 5 at every step."""
    n, lr, mu, tau, s = 20_000, 0.1, 0.7, 0.2, 0.5
    p = torch.zeros(n, requires_grad=True)
    opt = InertiaSGD([p], lr=lr, momentum=mu, dampening=tau, noise=s, seed=11, backend=backend, block=4096)
    p.grad = torch.zeros(n)
    opt.step(loss=0.0)  # first step: b = s xi
    c = 1.0 - tau
    for _ in range(3):
        b2 = float((opt.state[p]["momentum_buffer"].double() ** 2).sum())
        opt.step(loss=0.0)
        opt.step(loss=0.0)  # completes the previous step's ledger
        q = opt.ledger["injected"].item()
        mean = 0.5 * lr * c * c * s * s * n
        sd = 0.5 * lr * math.sqrt(4 * mu * mu * c * c * s * s * b2 + 2 * c ** 4 * s ** 4 * n)
        assert abs(q - mean) < 5 * sd, (q, mean, sd)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
@pytest.mark.parametrize("backend", BACKENDS)
def test_skipped_amp_step_leaves_the_ledger_untouched(backend):
    p = torch.randn(9, requires_grad=True)
    opt = InertiaSGD([p], lr=0.1, momentum=0.9, noise=0.1, backend=backend, block=BLOCK)
    for _ in range(3):
        p.grad = torch.randn(9)
        opt.step(loss=1.0)
    before = {k: v.clone() for k, v in opt.ledger.items()}
    before_groups = {k: v.clone() for k, v in opt.group_ledger.items()}
    state = (p.detach().clone(), opt.state[p]["momentum_buffer"].clone(), int(opt.param_groups[0]["step"]))
    p.grad = torch.full((9,), float("inf"))
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.tensor(1.0)
    opt.step(loss=2.0)
    assert not bool(opt.stepped)
    assert all(torch.equal(opt.ledger[k], before[k]) for k in before)
    assert all(torch.equal(opt.group_ledger[k], before_groups[k]) for k in before_groups)
    assert torch.equal(p.detach(), state[0]) and torch.equal(opt.state[p]["momentum_buffer"], state[1])
    assert int(opt.param_groups[0]["step"]) == state[2]  # the step and noise counter


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_ledger_splits_the_dissipated_and_injected_energy_by_group(backend):
    """Two groups with their own lr and momentum: D_g = (1 - mu_g^2) K_g of the step's starting state, and
    the groups' D and Q add up to the optimizer's."""
    seed = _fresh_seed()
    model = _mlp(seed)
    x, y = _data(seed + 1)
    opt = InertiaSGD(_groups(model, True, lr=0.03, momentum=0.5), lr=0.05, momentum=0.9, noise=0.2, seed=seed % 997,
                     backend=backend, block=BLOCK)
    kinetic = []
    for _ in range(4):
        opt.zero_grad()
        loss = _objective(model, x, y, False)
        loss.backward()
        opt.step(loss=loss)
        if kinetic:
            d, q = opt.group_ledger["dissipated"], opt.group_ledger["injected"]
            assert d.shape == q.shape == (2,) and d.dtype == torch.float64
            for g, mu in enumerate((0.9, 0.5)):
                assert d[g].item() == pytest.approx((1 - mu * mu) * kinetic[-1][g], rel=1e-12)
            assert d.sum().item() == pytest.approx(opt.ledger["dissipated"].item(), rel=1e-12)
            assert q.sum().item() == pytest.approx(opt.ledger["injected"].item(), rel=1e-12, abs=1e-15)
            assert (q != 0).all()
        kinetic.append(opt.group_kinetic.tolist())
