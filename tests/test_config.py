"""SimulationConfig: each option checked when set, the user's fields never rewritten, one resolved run."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inertia_gpu.config import ConfigError, RunConfig, SimulationConfig
from inertia_gpu.recording import recorded_between, recorded_count, recorded_steps


def test_validate_leaves_the_users_fields_alone():
    user = SimulationConfig(condition=10.0, dim=3, trajectories=1024)
    before = dataclasses.asdict(user)
    run = user.validate()
    assert dataclasses.asdict(user) == before
    assert isinstance(run, RunConfig) and run.spectrum == pytest.approx([0.1, 10 ** -0.5, 1.0])
    assert run.replicates == 16 and user.replicates == 128


def test_replace_on_a_resolved_run_resolves_again():
    run = SimulationConfig().validate()
    assert dataclasses.replace(run, spectrum=[1.0, 2.0]).dim == 2
    cond = SimulationConfig(condition=10.0, dim=3).validate()
    assert dataclasses.replace(cond, condition=100.0).spectrum == pytest.approx([0.01, 0.1, 1.0])
    assert dataclasses.replace(cond, dim=2).spectrum == pytest.approx([0.1, 1.0])
    wider = dataclasses.replace(SimulationConfig(trajectories=1024).validate(), trajectories=100_000)
    assert wider.replicates == 121  # from the request 128 (blocks of 832), not the 16 resolved for 1024
    with pytest.raises(ConfigError, match="--lr"):
        dataclasses.replace(run, lr=-1.0)


def test_setting_an_option_checks_it():
    user = SimulationConfig()
    with pytest.raises(ConfigError, match="--momentum"):
        user.momentum = 1.5
    run = user.validate()
    run.steps = 7
    assert run.recorded_steps == list(range(8))
    with pytest.raises(ConfigError, match="--steps"):
        run.steps = 0
    assert run.steps == 7


@pytest.mark.parametrize("field,value", [("lr", True), ("trajectories", True), ("momentum", np.bool_(True)),
                                         ("steps", 2.0), ("seed", -1), ("dim", 0), ("spectrum", "1,2"),
                                         ("record_every", "log:0"), ("diverge_factor", 1.0), ("noise", float("nan"))])
def test_wrong_types_and_booleans_are_refused_naming_the_option(field, value):
    with pytest.raises(ConfigError, match="--" + field.replace("_", "-")):
        SimulationConfig(**{field: value})


def test_numpy_scalars_are_accepted_as_plain_numbers():
    run = SimulationConfig(lr=np.float32(0.05), momentum=np.float64(0.5), trajectories=np.int64(640),
                           steps=np.int32(10), spectrum=np.array([0.5, 2.0]), seed=np.uint64(3)).validate()
    assert type(run.lr) is float and type(run.trajectories) is int and run.spectrum == [0.5, 2.0]
    assert SimulationConfig(record_every="3").validate().record_every == 3
    import json
    json.dumps(run.to_dict())


def test_recorded_steps_always_end_with_the_final_step():
    assert recorded_steps(20, 50) == [0, 20]
    assert recorded_steps(20, 3)[-2:] == [18, 20]
    assert recorded_steps(12, 4) == [0, 4, 8, 12]
    log = recorded_steps(10_000, "log:5")
    assert log[0] == 0 and log[-1] == 10_000 and log == sorted(set(log))
    assert 4 <= sum(100 <= n < 1000 for n in log) <= 6  # about five per decade
    for steps, every in [(20, 3), (20, 50), (100, "log:2"), (12, 4)]:
        full = recorded_steps(steps, every)
        assert recorded_count(steps, every) == len(full)
        for a in range(steps + 1):
            for b in range(a, steps + 1):
                assert recorded_between(steps, every, a, b) == [n for n in full if a <= n <= b]
