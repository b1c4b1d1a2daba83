"""examples/digits_ledger.py in its short mode: it trains, its ledger balances, it writes the plot."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_ledger.py"


def _example():
    spec = importlib.util.spec_from_file_location("digits_ledger", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_example_small_trains_and_plots_the_ledger(tmp_path):
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny network: more threads only contend on a shared CI box
    try:
        out = tmp_path / "ledger.png"
        h = _example().main(["--small", "--device", "cpu", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert h["loss"][-1] < 0.25 * h["loss"][0] and float(h["accuracy"]) > 0.8
    # the cumulative ledger accounts for the inertia at every step (row k: terms of steps 0..k-1)
    balance = -h["dissipated"] + h["injected"] + h["residual"]
    scale = np.abs(h["inertia"]).max() + h["dissipated"][-1]
    assert np.abs((h["inertia"] - h["inertia"][0]) - balance).max() <= 1e-9 * scale
    assert (np.diff(h["dissipated"]) >= 0).all() and h["injected"][-1] > 0
    # plausibility only (not a statistical test): the layers end up near the target temperature
    t_eff = h["effective_temperature"][-50:].mean(axis=0)
    assert ((t_eff > 1e-4 / 3) & (t_eff < 3e-4)).all(), t_eff


def test_digits_example_refuses_a_bad_temperature_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        _example().main(["--small", "--temperature", "-1"])
    assert exit_info.value.code == 2
    assert "temperature" in capsys.readouterr().err
