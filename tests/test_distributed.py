"""Sharding replicates across ranks changes no bit of the statistics."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from inertia_gpu import cli, distributed
from inertia_gpu.engine import simulate
from inertia_gpu.output import dumps

ARGS = ["--problem", "quadratic", "--spectrum", "0.3,1,3", "--lr", "0.05", "--momentum", "0.9", "--noise", "0.5",
        "--trajectories", "1000", "--steps", "80", "--replicates", "6", "--seed", "5", "--dtype", "float64",
        "--backend", "torch", "--quiet"]
VOLATILE = ("elapsed_s", "trajectory_steps_per_s", "device")


def _config(extra=()):
    return cli.config_from_args(cli.build_parser().parse_args(["simulate", *ARGS, *extra]))


def _stats(d):
    return {k: v for k, v in d.items() if k not in VOLATILE}


def test_two_rank_gloo_equals_one_process_bitwise(tmp_path):
    out = tmp_path / "two.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "inertia_gpu.cli", "simulate", *ARGS, "--distributed", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = simulate(_config())
    finally:
        torch.set_num_threads(threads)
    single = json.loads(dumps(one.to_dict()))
    two = json.loads(out.read_text())
    assert _stats(two) == _stats(single)  # float64 statistics, theory z-scores, first passage: every bit
    assert two["diverged"] == [0] * len(two["steps"])


class LocalShard(distributed.Shard):
    """A rank of a world run one after another in this process; merge returns only its own rows."""

    def merge(self, table, hist, own):
        self.own, self.table, self.hist = own, table.copy(), hist.copy()
        return table, hist


@pytest.mark.parametrize("world", [2, 3, 7])
def test_rank_count_invariance_in_process(world):
    config = dataclasses.replace(_config(), momentum_schedule="nesterov:3")
    full = simulate(config, with_theory=False)
    table = np.zeros_like(full.replicate_sums)
    hist = np.zeros_like(full.first_passage_hist)
    for rank in range(world):
        shard = LocalShard(rank, world)
        simulate(config, with_theory=False, shard=shard, chunk=128)  # chunking differs too
        a, b = shard.own
        assert not shard.table[:, :a].any() and not shard.table[:, b:].any()
        table[:, a:b] = shard.table[:, a:b]
        hist += shard.hist
    assert np.array_equal(table, full.replicate_sums)
    assert np.array_equal(hist, full.first_passage_hist)


def test_replicate_ranges_partition():
    for world in range(1, 9):
        for reps in range(1, 40):
            ranges = [distributed.Shard(r, world).replicate_range(reps) for r in range(world)]
            assert ranges[0][0] == 0 and ranges[-1][1] == reps
            assert all(ranges[i][1] == ranges[i + 1][0] for i in range(world - 1))


def test_without_torchrun_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    shard = distributed.init("cpu")
    assert (shard.rank, shard.world) == (0, 1)
