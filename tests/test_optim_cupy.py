"""InertiaSGD through the CUDA C step (CuPy): a clear refusal without a GPU, equality with foreach on one."""
import pytest
import torch

from inertia_gpu import InertiaSGD


def test_cupy_backend_without_a_gpu_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = torch.nn.Parameter(torch.randn(10))
    p.grad = torch.randn(10)
    opt = InertiaSGD([p], lr=0.1, momentum=0.9, backend="cupy")
    before = p.detach().clone()
    with pytest.raises(RuntimeError, match="backend='cupy'"):
        opt.step()
    assert torch.equal(p.detach(), before)  # refused before touching anything


@pytest.mark.gpu
@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.9, dampening=0.1, weight_decay=1e-3),
                                dict(momentum=0.9, nesterov=True, maximize=True), dict(momentum=0.0),
                                dict(momentum=0.9, noise=0.05, seed=7)])
def test_cupy_backend_equals_foreach_on_cuda(kw):
    torch.manual_seed(0)
    shapes = [(257,), (16, 33), (1,), (4, 4, 4)]
    runs = {}
    for backend in ("foreach", "cupy"):
        torch.manual_seed(1)
        params = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
        opt = InertiaSGD(params, lr=0.05, backend=backend, **kw)
        g = torch.Generator(device="cuda").manual_seed(2)
        for _ in range(20):
            for p in params:
                p.grad = torch.randn(p.shape, device="cuda", generator=g)
            opt.step(loss=1.0)
        runs[backend] = ([p.detach().clone() for p in params], opt.kinetic.item(),
                         {k: v.item() for k, v in opt.ledger.items()})
    for a, b in zip(runs["foreach"][0], runs["cupy"][0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert runs["cupy"][1] == pytest.approx(runs["foreach"][1], rel=1e-5)
    scale = max(abs(v) for v in runs["foreach"][2].values())
    for k, v in runs["foreach"][2].items():  # the ledger, the injected-noise term included
        assert runs["cupy"][2][k] == pytest.approx(v, abs=1e-5 * scale), k
