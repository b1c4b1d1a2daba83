"""Scale-out over processes with torch.distributed (torchrun): NCCL on GPUs, gloo on CPUs.

Replicates (whole blocks of GROUP trajectories, the batch-means units) are
sharded by index: rank r of W runs replicates [r R / W, (r + 1) R / W) through
the normal engine. Every replicate's sums are formed inside one launch by a
fixed-shape reduction, so they do not depend on which process formed them.
`Shard.merge` gathers the replicate-sum tables (each rank keeps its own rows:
no arithmetic, hence exact) and sums the integer first-passage histograms;
every rank then forms the final float64 statistics by the same fixed-order
computation as a single process: the result is bitwise equal to a
one-process run with the same seed.

    torchrun --standalone --nproc-per-node 2 -m inertia_gpu.cli simulate ... --distributed --json out.json
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from .config import ConfigError


@dataclass
class Shard:
    rank: int = 0
    world: int = 1
    device: str = "cpu"  # where collectives run: cuda for NCCL, cpu for gloo

    def replicate_range(self, replicates: int) -> tuple[int, int]:
        """The block of replicate indices this rank runs."""
        return self.rank * replicates // self.world, (self.rank + 1) * replicates // self.world

    def merge(self, table: np.ndarray, hist: np.ndarray, own: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Every rank's rows of the replicate table, and the summed histogram, on every rank."""
        if self.world == 1:
            return table, hist
        import torch.distributed as dist
        local = torch.from_numpy(np.ascontiguousarray(table)).to(self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(gathered, local)
        out = np.zeros_like(table)
        for r, t in enumerate(gathered):
            a, b = Shard(r, self.world).replicate_range(table.shape[1])
            out[:, a:b] = t[:, a:b].to("cpu").numpy()
        h = torch.from_numpy(np.ascontiguousarray(hist)).to(self.device)
        dist.all_reduce(h, op=dist.ReduceOp.SUM)
        return out, h.to("cpu").numpy()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device: str) -> Shard:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment).

    Without torchrun (no WORLD_SIZE) this is a one-process run.
    """
    if "WORLD_SIZE" not in os.environ:
        return Shard(0, 1, device)
    import torch.distributed as dist
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--distributed: --device cuda asked for but no CUDA device is visible here")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        backend = "nccl"
    else:
        if not dist.is_gloo_available():
            raise ConfigError("--distributed: this torch build has no gloo backend for CPU runs")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)
    return Shard(rank, world, device)


def finish() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
