"""The loop a user writes instead of `inertia-gpu simulate`: plain PyTorch, one step at a time.

    python benchmarks/peers/plain_torch_loop.py N STEPS [--compile]

d = 1 heavy ball on L = lam/2 theta^2 with additive gradient noise, the mean
inertia E[I] = E[lr/2 b^2 + L] taken in float64 at every step: the settings
of benchmarks/cpu_ratio.py. Only torch is imported. With --compile the step
is wrapped in torch.compile (compile time counts: it is part of the run).
Prints one JSON line: the wall time of the loop (kernel_s) and the last mean.
"""
import json
import sys
import time

import torch

LR, MU, NOISE, LAM = 0.01, 0.95, 0.5, 2.0


def step(th, b):
    g = LAM * th + NOISE * torch.randn_like(th)
    b.mul_(MU).add_(g)
    th.sub_(LR * b)
    inertia = (0.5 * LR) * b * b + (0.5 * LAM) * th * th
    return inertia.mean(dtype=torch.float64)


def main() -> None:
    n, steps = int(sys.argv[1]), int(sys.argv[2])
    fn = torch.compile(step) if "--compile" in sys.argv[3:] else step
    t0 = time.perf_counter()
    torch.manual_seed(0)
    th = torch.randn(n)
    b = torch.zeros(n)
    means = [fn(th, b) for _ in range(steps)]
    last = float(means[-1])
    print(json.dumps({"kernel_s": time.perf_counter() - t0, "last_mean_inertia": last}))


if __name__ == "__main__":
    main()
