"""Train a small network on scikit-learn's handwritten digits with InertiaSGD at a temperature, and
plot where the energy went: the inertia ledger, and the effective temperature against the target.

    pip install 'inertia-gpu[examples]'          # scikit-learn: load_digits ships inside it, no download
    python examples/digits_ledger.py --out digits_ledger.png
    python examples/digits_ledger.py --small     # a few seconds (what the tests run)
    python examples/digits_ledger.py --tensorboard runs/digits   # also log through opt.log_to

A 64-64-10 tanh network, full-batch cross-entropy on 1347 training images (the rest are held
out), heavy ball with Langevin gradient noise at temperature T (s = sqrt(2 (1 - mu) T / lr)).
Each step the optimizer reports, as device tensors, the inertia I = K + L of the state the loss
was evaluated at and the ledger of the last completed step: friction removed D = (1 - mu^2) K,
the noise injected Q, and the residual W the gradient kick and drift exchange, with
I_{k+1} - I_k = -D + Q + W. They are collected as tensors and read back once, at the end.
Runs on the CPU in well under a minute (a GPU takes the fused Triton step).
"""
from __future__ import annotations

import argparse
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from inertia_gpu import InertiaSGD  # noqa: E402

TERMS = ("dissipated", "injected", "residual")


def load(seed: int, device: str):
    """Digits as float32 tensors: pixels scaled to [0, 1], a fixed 75/25 split."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    cut = 3 * len(y) // 4
    train, test = order[:cut], order[cut:]
    return [t.to(device) for t in (x[train], y[train], x[test], y[test])]


def train(args) -> dict[str, np.ndarray]:
    torch.manual_seed(args.seed)
    x, y, x_test, y_test = load(args.seed, args.device)
    model = torch.nn.Sequential(torch.nn.Linear(64, args.hidden), torch.nn.Tanh(),
                                torch.nn.Linear(args.hidden, 10)).to(args.device)
    # one parameter group per layer: T_eff is reported per group
    opt = InertiaSGD([{"params": model[0].parameters()}, {"params": model[2].parameters()}],
                     lr=args.lr, momentum=args.momentum, temperature=args.temperature, seed=args.seed)
    if args.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        writer = SummaryWriter(args.tensorboard)
        opt.log_to(writer, every=max(1, args.steps // 100))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    rows = []  # per step: device tensors only (no host sync inside the loop)
    for _ in range(args.steps):
        opt.step(closure)
        rows.append(torch.cat([torch.stack([opt.loss, opt.kinetic, opt.inertia]),
                               torch.stack([opt.ledger[k] for k in TERMS]), opt.effective_temperature]))
    table = torch.stack(rows).cpu().numpy()  # the one read-back of the run
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    if args.tensorboard:
        writer.close()
    # row k holds the terms of step k - 1 (known once the loss of state k is): cumulative since state 0
    ledger = np.nan_to_num(table[:, 3:6], nan=0.0).cumsum(axis=0)
    return dict(loss=table[:, 0], kinetic=table[:, 1], inertia=table[:, 2], dissipated=ledger[:, 0],
                injected=ledger[:, 1], residual=ledger[:, 2], effective_temperature=table[:, 6:],
                accuracy=np.array(accuracy))


def plot(h: dict, args, path: str) -> None:
    steps = np.arange(len(h["loss"]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.semilogy(steps, h["loss"], label="loss L (training set)")
    ax.semilogy(steps, h["inertia"], label="inertia I = K + L")
    ax.semilogy(steps, h["kinetic"], lw=0.8, label="kinetic K = lr/2 |b|²")
    ax.set_xlabel("step")
    ax.set_title(f"digits, 64-{args.hidden}-10: test accuracy {float(h['accuracy']):.1%}")
    ax.legend()

    ax = axes[1]  # where the energy went: what came in stacked up, what went out stacked down
    q, d, w = h["injected"], h["dissipated"], h["residual"]
    ax.set_xscale("log")  # the early steps, where the loss turns into heat, would be a sliver otherwise
    steps, q, d, w = steps[1:], q[1:], d[1:], w[1:]
    w_in, w_out = np.maximum(w, 0.0), np.maximum(-w, 0.0)
    ax.fill_between(steps, 0, q, color="tab:orange", alpha=0.8, lw=0, label="injected by noise Q")
    ax.fill_between(steps, q, q + w_in, color="tab:green", alpha=0.5, lw=0, label="residual W (kick, drift)")
    ax.fill_between(steps, 0, -d, color="tab:blue", alpha=0.8, lw=0, label="dissipated by friction -D")
    ax.fill_between(steps, -d, -d - w_out, color="tab:green", alpha=0.5, lw=0)
    ax.plot(steps, h["inertia"][1:] - h["inertia"][0], "k", lw=1.2, label="I_k - I_0 = -D + Q + W")
    ax.axhline(0, color="0.5", lw=0.6)
    # symmetric log: the loss turned into heat early on stays visible beside the steady exchange of
    # noise and friction that grows with every step
    change = np.abs(h["inertia"] - h["inertia"][0]).max()
    ax.set_yscale("symlog", linthresh=max(0.1 * change, 1e-12))
    ax.set_xlabel("step")
    ax.set_title("where the energy went: the ledger since step 0")
    ax.legend(loc="lower left", fontsize=8)

    ax = axes[2]
    steps = np.arange(len(h["loss"]))
    t_eff = h["effective_temperature"]
    window = max(1, len(steps) // 50)
    kernel = np.ones(window) / window
    for g in range(t_eff.shape[1]):
        ax.semilogy(steps, t_eff[:, g], lw=0.5, alpha=0.4, color=f"C{g}")
        smooth = np.convolve(t_eff[:, g], kernel, mode="valid")
        ax.semilogy(steps[window - 1:], smooth, color=f"C{g}", label=f"T_eff = 2K/d, layer {g + 1} ({window}-step mean)")
    ax.axhline(args.temperature, color="k", ls="--", label=f"target T = {args.temperature:g}")
    flat = 2 * args.temperature / (1 + args.momentum)
    ax.axhline(flat, color="0.4", ls=":", label=f"2T/(1+mu) (flat directions)")
    ax.set_ylim(args.temperature / 30, args.temperature * 30)
    ax.set_xlabel("step")
    ax.set_title(f"effective temperature (lr={args.lr:g}, mu={args.momentum:g})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--temperature", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="a short run (200 steps, 16 hidden units)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR", help="also log to TensorBoard in DIR")
    parser.add_argument("--out", default="digits_ledger.png")
    args = parser.parse_args(argv)
    if args.small:
        args.steps, args.hidden = 200, 16
    if not (args.steps > 0 and args.hidden > 0 and args.temperature > 0 and math.isfinite(args.temperature)):
        parser.error("--steps and --hidden must be positive, --temperature positive and finite")
    if args.device == "cpu":
        torch.set_num_threads(1)  # a 64-unit network: more threads only wait on each other
    begin = time.perf_counter()
    h = train(args)
    plot(h, args, args.out)
    half = len(h["loss"]) // 2
    print(f"{args.steps} steps in {time.perf_counter() - begin:.1f} s: loss {h['loss'][-1]:.3g}, "
          f"test accuracy {float(h['accuracy']):.1%}, mean T_eff over the second half "
          f"{', '.join(f'{t:.3g}' for t in h['effective_temperature'][half:].mean(0))} (target {args.temperature:g}); "
          f"plot written to {args.out}")
    return h


if __name__ == "__main__":
    main()
