"""Tolerances derived from the arithmetic, shared by the tests that compare two orders of the same sums."""
import numpy as np

from inertia_gpu import ledger as ledger_ref
from inertia_gpu.spec import N_QUANTITIES


def summation_order_bound(config, sums: np.ndarray) -> np.ndarray:
    """How far two summation orders of a run's replicate sums may lie apart, column by column.

    Each trajectory's float64 observables are the same in both runs, so two replicate sums are two orders of
    the same n terms: each is within (n - 1) 2^-53 sum|x_i| of the exact sum (recursive summation), so
    |difference| <= 2 (n - 1) 2^-53 sum|x_i|; the inertia column is sum K + sum L, one rounding more:
    2 n 2^-53 sum|x_i| covers every column. For count, I, K, L and I^2 the terms are >= 0, so sum|x_i| is the
    sum itself; the shadow inertia I + (lr/2) b.g has |x_i| <= 2 I_i for a stable heavy ball
    (|(lr/2) b lam theta| <= sqrt(lr lam) (K + L) / 2 <= I with lr lam <= 4). The ledger's dissipated and
    injected terms have either sign: their sum|x_i| comes from the per-trajectory definition (ledger.simulate,
    which the kernels agree with to far below 1 %). The residual column may be formed from the group sums,
    ((sum K + sum L) - sum I_0) + sum D - sum Q, so its error is that of those sums: its scale is
    sum I + sum I_0 + sum|D| + sum|Q|.
    """
    n = config.trajectories // config.replicates
    scale = sums.copy()
    scale[..., 4] = 2.0 * sums[..., 1]
    run = ledger_ref.simulate(config)
    for k, terms in enumerate((run.dissipated, run.injected)):
        scale[..., N_QUANTITIES + k] = 1.01 * np.abs(terms).reshape(len(terms), config.replicates, n).sum(axis=-1)
    inertia0 = np.abs(run.inertia[0]).reshape(config.replicates, n).sum(axis=-1)
    scale[..., N_QUANTITIES + 2] = 1.01 * (sums[..., 1] + inertia0 + scale[..., N_QUANTITIES]
                                           + scale[..., N_QUANTITIES + 1])
    return 2 * n * 2.0 ** -53 * np.abs(scale)
