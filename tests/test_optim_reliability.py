"""InertiaSGD refuses bad input before it changes anything: steps, state_dicts, hyperparameters."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from inertia_gpu import InertiaSGD

BACKENDS = ["foreach", "triton"]


def _snapshot(opt: InertiaSGD, params) -> tuple:
    return ([p.detach().clone() for p in params],
            {id(p): {k: v.clone() for k, v in opt.state[p].items()} for p in params if p in opt.state},
            [g["step"].clone() for g in opt.param_groups])


def _assert_unchanged(opt: InertiaSGD, params, before) -> None:
    values, state, steps = before
    for p, v in zip(params, values):
        assert torch.equal(p.detach(), v)
    assert {id(p): {k: v for k, v in opt.state[p].items()} for p in params if p in opt.state}.keys() == state.keys()
    for p in params:
        for key, value in state.get(id(p), {}).items():
            assert torch.equal(opt.state[p][key], value)
    assert all(torch.equal(g["step"], s) for g, s in zip(opt.param_groups, steps))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_int_parameter_in_a_group_leaves_everything_as_it_was(backend, momentum):
    """A float and an int64 parameter in one group: the step raises and updates neither (nor buffers, nor step)."""
    w = torch.randn(6, requires_grad=True)
    n = torch.arange(4, dtype=torch.int64)
    opt = InertiaSGD([w, n], lr=0.1, momentum=momentum, noise=0.1, backend=backend, block=256)
    w.grad = torch.randn(6)
    n.grad = torch.ones(4, dtype=torch.int64)
    before = _snapshot(opt, [w, n])
    with pytest.raises(ValueError, match="parameter 1 has dtype torch.int64"):
        opt.step()
    _assert_unchanged(opt, [w, n], before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_in_a_later_group_leaves_the_earlier_groups_as_they_were(backend):
    """Group 0 is fine, group 1 has a mismatched gradient: group 0 must not have been stepped."""
    a = torch.randn(5, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = InertiaSGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9, backend=backend, block=256)
    for _ in range(2):  # buffers and step counters exist
        a.grad, b.grad = torch.randn(5), torch.randn(3)
        opt.step()
    n = torch.arange(3)
    n.grad = torch.ones(3, dtype=torch.int64)
    opt.param_groups[1]["params"].append(n)  # as a user editing groups by hand would
    a.grad, b.grad = torch.randn(5), torch.randn(3)
    before = _snapshot(opt, [a, b, n])
    with pytest.raises(ValueError, match="parameter 2 has dtype torch.int64"):
        opt.step()
    _assert_unchanged(opt, [a, b, n], before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nonfinite_lr_set_between_steps_is_refused_before_any_group_steps(backend):
    a, b = torch.randn(5, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = InertiaSGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.9, backend=backend, block=256,
                     skip_nonfinite=True)
    a.grad, b.grad = torch.randn(5), torch.randn(3)
    opt.step()
    opt.param_groups[1]["lr"] = math.inf  # e.g. a scheduler gone wrong
    before = _snapshot(opt, [a, b])
    skipped = opt.skipped_steps.clone()
    with pytest.raises(ValueError, match="lr"):
        opt.step()
    _assert_unchanged(opt, [a, b], before)
    assert torch.equal(opt.skipped_steps, skipped)


BAD_VALUES = [math.inf, -math.inf, math.nan, -1.0, "0.1", True]


@pytest.mark.parametrize("name", ["lr", "noise", "weight_decay", "momentum", "dampening", "temperature"])
@pytest.mark.parametrize("value", BAD_VALUES, ids=str)
def test_bad_hyperparameters_refused_at_construction_and_in_add_param_group(name, value):
    with pytest.raises(ValueError, match=name):
        InertiaSGD([torch.zeros(3, requires_grad=True)], **{"lr": 0.1, name: value})
    opt = InertiaSGD([torch.zeros(3, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=name):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], name: value})
    assert len(opt.param_groups) == 1  # a refused group leaves no trace


@pytest.mark.parametrize("value", [torch.tensor(math.inf), torch.tensor(-0.5), torch.tensor(math.nan)], ids=str)
def test_bad_tensor_lr_refused(value):
    with pytest.raises(ValueError, match="lr"):
        InertiaSGD([torch.zeros(3, requires_grad=True)], lr=value)


def _trained(momentum=0.9):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = InertiaSGD(model.parameters(), lr=0.1, momentum=momentum, backend="foreach")
    for _ in range(2):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    return model, opt


def _corrupt(kind: str, sd: dict) -> None:
    group = sd["param_groups"][0]
    if kind == "buffer shape":
        first = group["params"][0]
        sd["state"][first]["momentum_buffer"] = torch.zeros(7)
    elif kind == "missing lr":
        del group["lr"]
    elif kind == "negative step":
        group["step"] = torch.tensor(-3)
    elif kind == "float step":
        group["step"] = torch.tensor(2.5)
    elif kind == "inf lr":
        group["lr"] = math.inf
    elif kind == "nan noise":
        group["noise"] = math.nan
    elif kind == "unknown parameter":
        sd["state"][999] = {"momentum_buffer": torch.zeros(3)}
    elif kind == "buffer not a tensor":
        first = group["params"][0]
        sd["state"][first]["momentum_buffer"] = [0.0] * 12
    elif kind == "not a state_dict":
        sd.clear()


CORRUPTIONS = {"buffer shape": "shape", "missing lr": "lacks 'lr'", "negative step": "step",
               "float step": "step", "inf lr": "lr", "nan noise": "noise", "unknown parameter": "999",
               "buffer not a tensor": "momentum_buffer", "not a state_dict": "param_groups"}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_load_state_dict_checks_the_structure_and_changes_nothing_when_it_refuses(kind):
    model, opt = _trained()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the state's dicts with the optimizer
    _corrupt(kind, sd)
    params = list(model.parameters())
    before = _snapshot(opt, params)
    groups_before = [{k: v for k, v in g.items() if k not in ("params", "step")} for g in opt.param_groups]
    with pytest.raises(ValueError, match="load_state_dict") as err:
        opt.load_state_dict(sd)
    assert CORRUPTIONS[kind] in str(err.value) and "\n" not in str(err.value)
    _assert_unchanged(opt, params, before)
    assert groups_before == [{k: v for k, v in g.items() if k not in ("params", "step")} for g in opt.param_groups]


def test_load_state_dict_accepts_an_integer_step_and_torch_sgd_state():
    model, opt = _trained()
    sd = opt.state_dict()
    sd["param_groups"][0]["step"] = 5
    opt.load_state_dict(sd)
    step = opt.param_groups[0]["step"]
    assert step.dtype == torch.int64 and int(step) == 5
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    sgd.step()
    opt.load_state_dict(sgd.state_dict())  # no step, no noise keys: defaults
    for p in model.parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], sgd.state[p]["momentum_buffer"])
