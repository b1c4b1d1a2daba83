"""`inertia-gpu sweep`: many configurations in one pass, checked against exact theory."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from inertia_gpu import cli, theory
from inertia_gpu.config import SimulationConfig
from inertia_gpu.engine import simulate
from inertia_gpu.sweep import batched_config, parse_sweep, run_sweep


def test_momentum_sweep_reproduces_exact_decay_rate_curve(tmp_path):
    """60 momentum values through critical damping of the slow mode (mu_c = (1 - sqrt(lr))^2 ~ 0.80): every
    exact asymptotic rate lies inside its fitted 95 % interval (jackknife over replicates, so the strong
    correlation between the recorded steps of one ensemble is accounted for), and the peak sits at
    critical damping. Two modes, so the mean curve carries real sampling error. Recorded every third step
    (the reference's per-record group sums dominated the run; the fastest oscillation of the inertia, at
    mu = 0.99, still gets 8 records per period): the intervals widen from ~0.3 % to ~0.5 % of the rate, and the
    rates of a theory with a 1 % wrong learning rate still fall far outside them."""
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    code = cli.main(["sweep", "--sweep", "momentum=0.5:0.99:60", "--spectrum", "1,1.5", "--lr", "0.0111",
                     "--noise", "0", "--steps", "1500", "--record-every", "3", "--trajectories", "1024",
                     "--dtype", "float64", "--seed", "3", "--no-ledger", "--quiet", "--json", str(out),
                     "--plot", str(png)])  # rates only: no ledger
    assert code == 0
    table = json.loads(out.read_text())
    values = np.array(table["sweep"]["values"])
    assert len(values) == 60 and table["trajectories_per_value"] == 1024
    rows = table["rows"]
    base = SimulationConfig(spectrum=[1.0, 1.5], lr=0.0111)
    for v, r in zip(values, rows):
        exact = theory.decay_rate(dataclasses.replace(base, momentum=float(v)))["per_step"]
        assert r["theory_rate"] == pytest.approx(exact, rel=1e-12)
        lo, hi = r["ci95"]
        assert r["fit_interval"].startswith("jackknife")
        assert lo <= exact <= hi, (v, r)
        assert lo <= r["theory_rate_window"] <= hi, (v, r)
        assert hi - lo < 0.01 * exact  # the intervals are informative, not merely wide
        assert r["diverged_final"] == 0
    rate = np.array([r["rate"] for r in rows])
    mu_c = (1 - np.sqrt(0.0111)) ** 2
    assert abs(values[np.argmax(rate)] - mu_c) < 2 * (values[1] - values[0])
    assert png.stat().st_size > 10_000


def test_noise_sweep_stationary_levels_match_theory():
    """Sweeping the additive noise: each block settles at theory.stationary within 5 standard errors,
    and its curve follows theory.expected at every recorded step."""
    base = SimulationConfig(spectrum=[0.5, 2.0], lr=0.05, momentum=0.8, steps=300, record_every=5,
                            trajectories=2048, replicates=16, dtype="float64", seed=9, backend="torch").validate()
    table = run_sweep(base, "noise", [0.2, 0.5, 1.0])
    for v, r in zip([0.2, 0.5, 1.0], table["rows"]):
        exact = theory.stationary(dataclasses.replace(base, noise=v))["inertia"]
        assert r["theory_stationary_inertia"] == pytest.approx(exact, rel=1e-12)
        assert abs(r["stationary_inertia"] - exact) < 5 * r["stationary_inertia_sem"]
        assert r["theory_max_abs_z"] < 5.0


def test_sweep_rows_carry_the_ledger_against_theory():
    """Per configuration, the cumulative D, Q, W at the final step within 5 standard errors of theory.ledger
    (per-trajectory momentum: the ledger's friction factor is each trajectory's own mu); none with the ledger off."""
    base = SimulationConfig(spectrum=[0.5, 2.0], lr=0.05, noise_model="temperature", temperature=0.3, steps=40,
                            record_every=10, trajectories=1024, replicates=16, dtype="float64", seed=5,
                            backend="torch").validate()
    values = [0.5, 0.9]
    table = run_sweep(base, "momentum", values)
    for v, r in zip(values, table["rows"]):
        exact = theory.ledger(dataclasses.replace(base, momentum=v))
        for name in ("dissipated", "injected", "residual"):
            z = abs(r[f"ledger.{name}_final"] - exact[name][-1]) / r[f"ledger.{name}_final_sem"]
            assert z < 5, (v, name, r[f"ledger.{name}_final"], exact[name][-1])
        assert r["ledger.effective_temperature"] > 0
    off = run_sweep(dataclasses.replace(base, ledger=False, trajectories=128, replicates=2), "momentum", values)
    assert not [k for k in off["rows"][0] if k.startswith("ledger")]


def test_batched_blocks_equal_separate_runs_for_first_value():
    """Block 0 of the batch uses trajectories [0, B): with the scalar option it is exactly one simulate run
    (same noise, same sums); per-trajectory tensors change rounding at most."""
    base = SimulationConfig(spectrum=[1.0, 3.0], lr=0.05, momentum=0.9, noise=0.3, steps=40, trajectories=256,
                            replicates=4, dtype="float64", backend="torch").validate()
    combined, block = batched_config(base, "momentum", [0.9, 0.5])
    assert block == 256 and combined.trajectories == 512 and combined.replicates == 8
    both = simulate(combined, with_theory=False)
    alone = simulate(dataclasses.replace(base), with_theory=False)
    np.testing.assert_allclose(both.replicate_sums[:, :4], alone.replicate_sums, rtol=1e-13, atol=0)
    other = simulate(dataclasses.replace(base, momentum=0.5), with_theory=False)
    assert not np.allclose(both.replicate_sums[:, 4:], other.replicate_sums)  # different trajectories: own noise


@pytest.mark.parametrize("argv", [
    ["--sweep", "momentum=0.5:1.5:3"],  # a value outside [0, 1]
    ["--sweep", "bogus=1:2:3"],
    ["--sweep", "momentum=a:b:c"],
    ["--sweep", "momentum=0.1:0.2:0"],
    ["--sweep", "damping=0.1:1:3"],  # heavy ball has no damping
    ["--sweep", "temperature=0.1:1:3", "--noise-model", "additive"],  # needs --noise-model temperature
    ["--sweep", "lr=0.01:0.1:3", "--lr", "0.05"],  # the swept option given twice
    ["--sweep", "lr=0.01:0.1:3", "--backend", "numba"],
    ["--sweep", "lr=-1:0.1:3"],
])
def test_invalid_sweeps_exit_2_with_one_line(argv, capsys):
    code = cli.main(["sweep", *argv, "--steps", "5", "--trajectories", "64", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("inertia-gpu: error: --"), err


def test_parse_sweep_grids():
    assert parse_sweep("momentum=0.5:0.9:5")[1] == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9])
    assert parse_sweep("lr=0.1,0.2") == ("lr", [0.1, 0.2])
