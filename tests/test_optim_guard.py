"""InertiaSGD's opt-in guard: a step with non-finite gradients is skipped on the device and counted."""
import pytest
import torch

from inertia_gpu import InertiaSGD


def train(opt_factory, poison_steps, steps=12, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    opt = opt_factory(model.parameters())
    for k in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if k in poison_steps:
            next(model.parameters()).grad[0, 0] = float("nan") if k % 2 else float("inf")
        opt.step()
    return model, opt


@pytest.mark.parametrize("backend", ["foreach", "triton"])
def test_nonfinite_steps_are_skipped_and_counted(backend):
    poisoned = {0, 5, 6}
    kw = dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3)
    guarded, opt = train(lambda p: InertiaSGD(p, backend=backend, skip_nonfinite=True, **kw), poisoned)
    # the reference: torch.optim.SGD that simply does not step on the poisoned iterations
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    x, y = torch.randn(32, 5), torch.randn(32, 1)
    sgd = torch.optim.SGD(model.parameters(), **kw)
    for k in range(12):
        sgd.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        if k not in poisoned:
            sgd.step()
    for a, b in zip(guarded.parameters(), model.parameters()):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert int(opt.skipped_steps) == len(poisoned)


def test_without_the_guard_nonfinite_gradients_propagate():
    model, opt = train(lambda p: InertiaSGD(p, lr=0.05, momentum=0.9, backend="foreach"), {3})
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.skipped_steps is None
