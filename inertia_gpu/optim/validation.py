"""InertiaSGD's checks of hyperparameters and of a state_dict, all made before anything changes.

Every error is one line naming the option (ValueError), so a caller can show it as it is.
"""
from __future__ import annotations

import math
import numbers

import torch

BACKENDS = ("auto", "foreach", "triton", "cupy")
REQUIRED_GROUP_KEYS = ("params", "lr", "momentum", "dampening", "weight_decay")


def _real(name: str, value) -> float:
    """`value` as a float when it is a finite real number (not a bool); else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Invalid {name}: {value!r} (must be a real number)")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Invalid {name}: {value} (must be finite)")
    return value


def _check_lr(lr) -> None:
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1 or not lr.is_floating_point():
            raise ValueError("Invalid lr: as a tensor it must hold one floating-point element")
        return  # its value is checked once, when the group is added (a read here would sync every step)
    if not _real("lr", lr) >= 0.0:
        raise ValueError(f"Invalid lr: {lr} (must be >= 0)")


def check_group(group: dict) -> None:
    """Raise ValueError (one line, naming the option) unless the group's hyperparameters are valid."""
    _check_lr(group["lr"])
    momentum, dampening = _real("momentum", group["momentum"]), _real("dampening", group["dampening"])
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1])")
    if not 0.0 <= dampening <= 1.0:
        raise ValueError(f"Invalid dampening: {dampening} (must be in [0, 1])")
    if not _real("weight_decay", group["weight_decay"]) >= 0.0:
        raise ValueError(f"Invalid weight_decay: {group['weight_decay']} (must be >= 0)")
    for name in ("nesterov", "maximize"):
        if not isinstance(group[name], bool):
            raise ValueError(f"Invalid {name}: {group[name]!r} (must be True or False)")
    if group["nesterov"] and (momentum <= 0 or dampening != 0):
        raise ValueError("Invalid nesterov: needs momentum > 0 and dampening = 0")
    if not _real("noise", group["noise"]) >= 0.0:
        raise ValueError(f"Invalid noise: {group['noise']} (must be >= 0)")
    temperature = group["temperature"]
    if temperature is not None:
        if not _real("temperature", temperature) >= 0.0:
            raise ValueError(f"Invalid temperature: {temperature} (must be >= 0)")
        if group["noise"] != 0:
            raise ValueError("Invalid noise/temperature: give one of them, not both")
    seed = group["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 1 << 64:
        raise ValueError(f"Invalid seed: {seed!r} (must be an int in [0, 2**64))")
    if group["backend"] not in BACKENDS:
        raise ValueError(f"Invalid backend: {group['backend']!r} (allowed: {', '.join(BACKENDS)})")


def check_lr_value(lr) -> None:
    """A tensor lr's value (one host read: only when a group is added)."""
    if isinstance(lr, torch.Tensor) and not bool(torch.isfinite(lr).all() & (lr >= 0).all()):
        raise ValueError(f"Invalid lr: {lr} (must be finite and >= 0)")


def step_count(value, where: str) -> torch.Tensor:
    """A saved step counter as an int64 0-dim tensor; ValueError unless it is a non-negative integer."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise ValueError(f"load_state_dict: {where} 'step' must be a non-negative integer, got {value!r}")
        value = int(value.reshape(()))
    elif isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"load_state_dict: {where} 'step' must be a non-negative integer, got {value!r}")
    if value < 0:
        raise ValueError(f"load_state_dict: {where} 'step' must be a non-negative integer, got {value}")
    return torch.tensor(int(value), dtype=torch.int64)


def _check_buffers(state: dict, shapes: dict) -> None:
    for pid, entry in state.items():
        if pid not in shapes:
            raise ValueError(f"load_state_dict: state for parameter id {pid!r}, which no parameter group lists")
        if not isinstance(entry, dict):
            raise ValueError(f"load_state_dict: state of parameter id {pid!r} must be a dict")
        buf = entry.get("momentum_buffer")
        if buf is None:
            continue
        if not isinstance(buf, torch.Tensor) or not buf.is_floating_point():
            raise ValueError(f"load_state_dict: momentum_buffer of parameter id {pid!r} must be a float tensor")
        if tuple(buf.shape) != shapes[pid]:
            raise ValueError(f"load_state_dict: momentum_buffer of parameter id {pid!r} has shape "
                             f"{tuple(buf.shape)}, the parameter {shapes[pid]}")


def check_state_dict(state_dict, param_groups: list[dict], defaults: dict) -> None:
    """Raise ValueError (one line) unless `state_dict` fits these groups; nothing is changed."""
    if not isinstance(state_dict, dict) or not {"state", "param_groups"} <= state_dict.keys():
        raise ValueError("load_state_dict: expected a dict with 'state' and 'param_groups'")
    saved, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(saved, list) or not isinstance(state, dict):
        raise ValueError("load_state_dict: 'param_groups' must be a list and 'state' a dict")
    if len(saved) != len(param_groups):
        raise ValueError(f"load_state_dict: {len(saved)} parameter groups saved, the optimizer has {len(param_groups)}")
    shapes = {}
    for gi, (group, ours) in enumerate(zip(saved, param_groups)):
        missing = [k for k in REQUIRED_GROUP_KEYS if not isinstance(group, dict) or k not in group]
        if missing:
            raise ValueError(f"load_state_dict: parameter group {gi} lacks {', '.join(repr(k) for k in missing)}")
        if len(group["params"]) != len(ours["params"]):
            raise ValueError(f"load_state_dict: parameter group {gi} saved {len(group['params'])} parameters, "
                             f"the optimizer's has {len(ours['params'])}")
        merged = {**defaults, "nesterov": False, "maximize": False, **group}
        try:
            check_group(merged)
        except ValueError as exc:
            raise ValueError(f"load_state_dict: parameter group {gi}: {exc}") from None
        if "step" in group:
            step_count(group["step"], f"parameter group {gi}")
        shapes.update({pid: tuple(p.shape) for pid, p in zip(group["params"], ours["params"])})
    _check_buffers(state, shapes)
