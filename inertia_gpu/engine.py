"""The ensemble engine: plans launches, runs a backend, turns partial sums into statistics.

A run of N trajectories is cut into replicates (consecutive blocks of whole
GROUPs, the batch-means units) and launches of whole replicates, so each
replicate's sums are formed inside one launch by a fixed-shape reduction:
the statistics are then identical whatever the chunking. Steps are cut
into windows when the partial-sum buffer of a launch would exceed its
budget; the per-trajectory state is carried between windows.

torch is imported only where a run needs it (a torch-based backend, CUDA, drawn
spectra): a CPU run on the numba backend works on numpy throughout.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import backends
from .backends.base import FRACTIONS, GROUP, LEDGER, N_COLUMNS, host_array, recorded_in_window
from .config import ConfigError, SimulationConfig
from .output import finite_list, write_json
from .recording import is_arithmetic, max_records_in, recorded_count, window_for
from .stats import combine, first_passage_summary, fit_decay

# bytes of float64 per-group partial sums per launch: on a GPU, large enough that one launch covers
# ~100+ steps of 10^7 trajectories (few launches, little host work between them)
PARTIALS_BUDGET = {"cpu": 256 * 2 ** 20, "cuda": 2 * 2 ** 30}
SPECTRUM_SAMPLE = 100_000  # drawn spectra the theory averages over (a run's first trajectories)
STATE_BUDGET = {"cpu": 512 * 2 ** 20, "cuda": 8 * 2 ** 30}  # bytes of per-trajectory state per launch


@dataclass
class Plan:
    replicate_size: int  # trajectories per replicate (a multiple of GROUP)
    replicates: int
    chunk: int  # trajectories per launch (a multiple of replicate_size)
    window: int  # steps per launch

    @property
    def groups_per_replicate(self) -> int:
        return self.replicate_size // GROUP


def plan(config: SimulationConfig, chunk: int | None = None, window: int | None = None) -> Plan:
    """Sizes of replicates, launches and step windows for `config`.

    chunk/window override the budgets (tests use them to show the result does not depend on them).
    """
    n = config.trajectories
    per_rep = math.ceil(n / config.replicates)
    replicate_size = max(GROUP, math.ceil(per_rep / GROUP) * GROUP)
    replicates = math.ceil(n / replicate_size)
    if chunk is None:
        by_state = STATE_BUDGET[config.device] // bytes_per_trajectory(config)
        chunk = max(1, by_state // replicate_size) * replicate_size
    else:
        chunk = max(1, math.ceil(chunk / replicate_size)) * replicate_size
    chunk = min(chunk, replicates * replicate_size)
    if window is None:
        per_record = math.ceil(chunk / GROUP) * N_COLUMNS * 8
        records = max(2, PARTIALS_BUDGET[config.device] // per_record)
        window = window_for(config.steps, config.record_every, records)
    return Plan(replicate_size, replicates, chunk, min(window, config.steps))


def bytes_per_trajectory(config: SimulationConfig) -> int:
    """Device bytes per trajectory of a launch: the state and the working set of a step."""
    return (2 * config.dim + 10) * 8 + 3 * 4 + 64 * config.dim  # + the ledger's (D, Q) in float64


@dataclass
class SimulationResult:
    config: SimulationConfig
    steps: np.ndarray
    stats: dict[str, np.ndarray]
    replicate_sums: np.ndarray  # [n_records, R, Q] float64
    first_passage_hist: np.ndarray  # [len(FRACTIONS), steps + 2]
    backend: str
    device_name: str
    elapsed_s: float
    theory: dict[str, np.ndarray] = field(default_factory=dict)
    stationary: dict[str, float] = field(default_factory=dict)
    trajectory_steps_done: int | None = None  # computed by this process (a resumed run did the rest before)
    theory_unavailable: str | None = None  # why the exact theory is missing, when it was attempted
    theory_ledger: dict[str, np.ndarray] = field(default_factory=dict)  # exact E[D], E[Q], E[W], T_eff

    def __getattr__(self, name):
        stats = self.__dict__.get("stats", {})
        if name in stats:
            return stats[name]
        raise AttributeError(name)

    @property
    def diverged(self) -> np.ndarray:
        return (self.config.trajectories - self.stats["finite"]).astype(np.int64)

    @property
    def trajectory_steps_per_s(self) -> float | None:
        """Throughput of this process; None when it computed nothing (a finished checkpoint)."""
        done = self.config.trajectories * self.config.steps if self.trajectory_steps_done is None \
            else self.trajectory_steps_done
        if done == 0 or self.elapsed_s <= 0:
            return None
        return done / self.elapsed_s

    def decay_fit(self) -> dict:
        """Rate (exponential, constant schedules) or exponent (power law, nesterov) of E[I] - E[I_inf]."""
        cfg = self.config
        model = "power" if cfg.nesterov_r is not None else "exponential"
        floor = self.stationary.get("inertia")
        mean = self.stats["inertia_mean"]
        if floor is None:
            tail = mean[-max(2, len(self.steps) // 5):]
            floor = 0.0 if not cfg.noisy else (float(np.mean(tail)) if np.isfinite(tail).all() else math.nan)
        if not math.isfinite(floor):
            return {"model": model, "rate": None, "ci95": [None, None],
                    "reason": "no finite stationary level to fit against (diverged trajectories)"}
        unit = cfg.dt if cfg.continuous else 1.0
        try:
            with np.errstate(all="ignore"):
                fit = fit_decay(self.steps, mean, self.stats["inertia_sem"], floor, model, unit,
                                replicate_sums=self.replicate_sums)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            return {"model": model, "rate": None, "ci95": [None, None], "reason": f"no fit: {exc}"}
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (fit["rate"], *fit["ci95"])) \
                and "reason" not in fit:
            fit["reason"] = (f"no fit: {fit.get('points', 0)} recorded steps stand clear of the floor by 5 standard "
                             "errors (two are needed, and a finite standard error: at least two replicates)")
        return fit

    def to_dict(self) -> dict:
        """The JSON record: strict JSON (None where a figure does not exist, with a reason beside it)."""
        s = self.stats
        out = {
            "config": self.config.to_dict(),
            "backend": self.backend,
            "device": self.device_name,
            "elapsed_s": self.elapsed_s,
            "trajectory_steps_per_s": self.trajectory_steps_per_s,
            "steps": self.steps.tolist(),
            "diverged": self.diverged.tolist(),
        }
        if out["trajectory_steps_per_s"] is None:
            out["trajectory_steps_per_s_reason"] = "nothing computed in this process (resumed a finished checkpoint)"
        for q in ("inertia", "kinetic", "loss", "shadow_inertia"):
            out[f"{q}_mean"] = finite_list(s[f"{q}_mean"])
            out[f"{q}_sem"] = finite_list(s[f"{q}_sem"])
        reasons = _null_reasons(self)
        if reasons:
            out["null_reasons"] = reasons
        out["first_passage"] = first_passage_summary(self.first_passage_hist)
        out["decay_fit"] = self.decay_fit()
        if self.theory:
            out["theory"] = {f"{k}_mean": finite_list(v) for k, v in self.theory.items()}
            with np.errstate(all="ignore"):
                z = np.abs((s["inertia_mean"] - self.theory["inertia"]) / s["inertia_sem"])
            ok = np.isfinite(z)
            out["theory"]["inertia_max_abs_z"] = float(z[ok].max()) if ok.any() else None
            if not ok.any():
                out["theory"]["inertia_max_abs_z_reason"] = "no recorded step has a finite mean, theory and " \
                                                            "standard error (one replicate, or all diverged)"
        elif self.theory_unavailable:
            out["theory"] = None
            out["theory_unavailable"] = self.theory_unavailable
        if self.stationary:
            out["stationary"] = self.stationary
        if self.config.ledger:
            out.update(self._ledger_dict())
            if self.theory_ledger and isinstance(out.get("theory"), dict):
                out["theory"]["ledger"] = {f"{k}_mean": finite_list(v) for k, v in self.theory_ledger.items()}
        return out

    def _ledger_dict(self) -> dict:
        """ledger.*_mean/_sem (batch means, as the other quantities); T_eff = 2 E[K] / d under a temperature."""
        s, out = self.stats, {}
        for name in LEDGER:
            for tail in ("mean", "sem"):
                out[f"ledger.{name}_{tail}"] = finite_list(s[f"{name}_{tail}"])
        if not all(np.isfinite(s[f"{name}_mean"]).all() for name in LEDGER):
            out["ledger_null_reason"] = "null at steps where every trajectory had diverged"
        if self.config.noise_model == "temperature":
            d = self.config.dim
            out["ledger.temperature"] = self.config.temperature
            out["ledger.effective_temperature_mean"] = finite_list(2.0 * s["kinetic_mean"] / d)
            out["ledger.effective_temperature_sem"] = finite_list(2.0 * s["kinetic_sem"] / d)
        return out

    def write_json(self, path: str) -> None:
        """Write strict JSON atomically: a crash mid-write never leaves a truncated or stray file."""
        write_json(path, self.to_dict())


def _null_reasons(result: SimulationResult) -> dict:
    """Why a reported column holds null: the JSON says so next to it."""
    out = {}
    if not np.isfinite(result.stats["inertia_mean"]).all():
        out["inertia_mean"] = "null at steps where every trajectory had diverged"
    if not np.isfinite(result.stats["inertia_sem"]).all():
        out["inertia_sem"] = ("null where no batch-means error exists (fewer than two replicates hold a finite "
                              "trajectory) or it overflows float64")
    return out


def device_name(device: str, backend=None) -> str:
    """The device in words; on the CPU with the threads the backend computes on (its own pool, or torch's)."""
    if device == "cuda":
        import torch
        return torch.cuda.get_device_name()
    import platform
    threads = backend.threads() if hasattr(backend, "threads") else None
    if threads is None:
        import torch
        threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} CPU ({threads} threads)"


def check_device(config: SimulationConfig) -> None:
    if config.device != "cuda":
        return
    import torch
    if not torch.cuda.is_available():
        raise ConfigError("--device: cuda asked for but no CUDA device is visible here; use --device cpu")


def simulate(config: SimulationConfig, progress: bool = False, chunk: int | None = None,
             window: int | None = None, with_theory: bool = True, *, shard=None,
             checkpoint: str | None = None, checkpoint_every: int | None = None) -> SimulationResult:
    """Run the ensemble described by `config`; see SimulationResult for what comes back.

    shard: a `distributed.Shard` (rank, world, merge): this process runs only its block of
      whole replicates; the tables of all ranks are merged before the statistics are formed,
      so every rank returns what one process would.
    checkpoint / checkpoint_every: save the progress (`checkpoint.Checkpoint`) after every
      window of at most checkpoint_every steps, and resume from the file when it exists and
      matches this run. Neither changes a single bit of the statistics. The file is locked
      for the run: a second run on the same path is refused.
    """
    config = config.validate()
    check_device(config)
    backend = _able_to_record(config, backends.resolve(config))
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
                                         or checkpoint_every <= 0):
        raise ConfigError(f"--checkpoint-every: must be a positive integer, got {checkpoint_every!r}")
    p = plan(config, chunk, window)
    if checkpoint is not None and checkpoint_every is not None:
        p.window = min(p.window, checkpoint_every)
    check_fits(config, p)
    ckpt = None
    if checkpoint is not None:
        from .checkpoint import Checkpoint
        ckpt = Checkpoint(checkpoint, config, backend.name, shard)
    try:
        result = _run(config, backend, p, shard, ckpt, progress)
    finally:
        if ckpt is not None:
            ckpt.close()
    if with_theory:
        _attach_theory(result)
    return result


def _run(config: SimulationConfig, backend, p: Plan, shard, ckpt, progress: bool) -> SimulationResult:
    """The launches of this process (resuming from `ckpt`'s progress), then the merged statistics."""
    steps = np.asarray(config.recorded_steps)
    table = np.zeros((len(steps), p.replicates, N_COLUMNS))
    hist = np.zeros((len(FRACTIONS), config.steps + 2), dtype=np.int64)
    rep_begin, rep_end = (0, p.replicates) if shard is None else shard.replicate_range(p.replicates)
    first, last = rep_begin * p.replicate_size, min(rep_end * p.replicate_size, config.trajectories)
    resume = ckpt.load() if ckpt is not None else None
    done_chunks, resume_step, resume_state = 0, 0, None
    if resume is not None:
        resume.check(config, p, (first, last))
        p.chunk = resume.chunk  # progress is counted in the chunks of the run that wrote it
        table[...] = resume.table
        hist[...] = resume.hist
        done_chunks, resume_step, resume_state = resume.chunk_index, resume.step, resume.state
    starts = list(range(first, last, p.chunk))
    total = (last - first) * config.steps
    done_before = sum(min(p.chunk, last - s) for s in starts[:done_chunks]) * config.steps
    if done_chunks < len(starts):
        done_before += min(p.chunk, last - starts[done_chunks]) * resume_step
    row_of = {n: i for i, n in enumerate(steps.tolist())}
    run = getattr(backend, "run_arrays", backend.run)  # numpy in and out where the backend offers it
    t0 = time.perf_counter()
    with _progress(progress, total) as bar:
        bar.advance(done_before)
        for index in range(done_chunks, len(starts)):
            start = starts[index]
            count = min(p.chunk, last - start)
            state, step0 = (resume_state, resume_step) if index == done_chunks and resume_state is not None \
                else (None, 0)
            for begin in range(step0, config.steps, p.window):
                end = min(begin + p.window, config.steps)
                state, partials = run(config, start, count, begin, end, state)
                rows = [row_of[n] for n in recorded_in_window(config, begin, end)]
                table[rows, start // p.replicate_size:start // p.replicate_size + _reps(count, p)] = \
                    _replicate_sums(partials, p)
                bar.advance(count * (end - begin))
                if end == config.steps:
                    fp = host_array(state.first_passage)
                    for j in range(len(FRACTIONS)):
                        hist[j] += np.bincount(fp[:, j] + 1, minlength=config.steps + 2)[: config.steps + 2]
                if ckpt is not None:
                    if end == config.steps:
                        ckpt.save(p.chunk, index + 1, 0, table, hist, None)
                    else:
                        ckpt.save(p.chunk, index, end, table, hist, state)
    if shard is not None:
        table, hist = shard.merge(table, hist, (rep_begin, rep_end))
    with np.errstate(over="ignore", invalid="ignore"):  # sums beyond float64 become null with a reason, not warnings
        stats = combine(table)
    return SimulationResult(config, steps, stats, table, hist, backend.name, device_name(config.device, backend),
                            time.perf_counter() - t0, trajectory_steps_done=total - done_before)


def memory_estimate(config: SimulationConfig, p: Plan) -> dict:
    """Bytes a run needs: per launch on the device (state + working set + partial sums), and on the host."""
    bytes_per_traj = bytes_per_trajectory(config)
    records_per_window = max_records_in(config.steps, config.record_every, p.window)
    partials = math.ceil(p.chunk / GROUP) * records_per_window * N_COLUMNS * 8
    records = recorded_count(config.steps, config.record_every)  # arithmetic: never build a list of a huge request
    host = records * p.replicates * N_COLUMNS * 8 * 2 + len(FRACTIONS) * (config.steps + 2) * 8
    return {"per_trajectory": bytes_per_traj, "replicate": bytes_per_traj * p.replicate_size,
            "launch": bytes_per_traj * p.chunk + partials, "host": host}


def device_budget(config: SimulationConfig) -> int:
    """Bytes one launch may use: free device memory on CUDA (capped by STATE_BUDGET), STATE_BUDGET on the CPU."""
    if config.device == "cuda":
        import torch
        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return int(min(free * 0.8, STATE_BUDGET["cuda"]))
    return STATE_BUDGET["cpu"]


def host_budget() -> int:
    import os
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def check_fits(config: SimulationConfig, p: Plan) -> None:
    """Refuse early, with the estimate, a run that cannot fit at all.

    Runs larger than memory are split into launches of whole replicates by `plan`; what cannot
    be split is one replicate (the unit of the fixed-order sums) and the host-side tables.
    """
    est = memory_estimate(config, p)
    budget = device_budget(config)
    if est["replicate"] > budget:
        raise ConfigError(
            f"--trajectories/--replicates/--dim: one replicate of {p.replicate_size} trajectories x dim {config.dim} "
            f"needs ~{_gib(est['replicate'])} per launch, over the {_gib(budget)} budget of the {config.device} device; "
            f"raise --replicates (now {config.replicates}) or lower --dim/--trajectories")
    limit = host_budget() // 2
    if est["host"] > limit:
        raise ConfigError(
            f"--steps/--record-every/--replicates: the statistics table needs ~{_gib(est['host'])} of host memory, "
            f"over {_gib(limit)} (half of this machine's); raise --record-every or lower --steps/--replicates")


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.3g} GiB"


def _reps(count: int, p: Plan) -> int:
    return math.ceil(count / p.replicate_size)


def _replicate_sums(partials, p: Plan) -> np.ndarray:
    """Group sums [rec, groups, Q] -> replicate sums [rec, reps, Q] by a fixed pairwise tree.

    The tree is a function of groups_per_replicate alone (elementwise adds of halves, the odd one
    carried), so a replicate's sum does not depend on how many replicates share the launch or on
    the device's reduction strategy. It runs where the partials are: on a GPU only the small
    replicate table crosses to the host, not the per-group partials. numpy partials (a CPU
    backend's own) are summed in numpy: the same adds in the same order, so the same bits.
    """
    if isinstance(partials, np.ndarray):
        return _replicate_sums_numpy(partials.astype(np.float64, copy=False), p.groups_per_replicate)
    import torch
    x = partials.to(torch.float64)
    _check_columns(x)
    rec, groups, q = x.shape
    gpr = p.groups_per_replicate
    reps = math.ceil(groups / gpr)
    pad = reps * gpr - groups
    if pad:
        x = torch.cat([x, x.new_zeros((rec, pad, q))], 1)
    x = x.reshape(rec, reps, gpr, q)
    while x.shape[2] > 1:
        n, half = x.shape[2], x.shape[2] // 2
        head = x[:, :, :half] + x[:, :, half:2 * half]
        x = torch.cat([head, x[:, :, 2 * half:]], 2) if n % 2 else head
    return host_array(x[:, :, 0])


def _check_columns(x) -> None:
    if x.shape[-1] != N_COLUMNS:
        raise RuntimeError(f"backend partial sums have {x.shape[-1]} columns, expected {N_COLUMNS} (spec.COLUMNS)")


def _replicate_sums_numpy(x: np.ndarray, gpr: int) -> np.ndarray:
    """`_replicate_sums` of float64 numpy partials, the same tree in place: the first level into a
    buffer of half the size, every later level added into the front of that buffer, the odd slot
    moved down (no level allocated or concatenated; x is not written). A last, partial replicate is
    padded with zeros as the tree defines it, on a copy of its own groups only."""
    _check_columns(x)
    if gpr == 1:  # a group per replicate: the partials are the sums
        return x
    rec, groups, q = x.shape
    reps = math.ceil(groups / gpr)
    full = groups // gpr
    out = np.empty((rec, reps, q))
    if full:
        _tree_into(x[:, :full * gpr].reshape(rec, full, gpr, q), out[:, :full])
    if reps > full:
        last = np.zeros((rec, 1, gpr, q))
        last[:, 0, :groups - full * gpr] = x[:, full * gpr:]
        _tree_into(last, out[:, full:])
    return out


def _tree_into(v: np.ndarray, dst: np.ndarray) -> None:
    """dst [rec, r, q] = the pairwise tree over axis 2 of v [rec, r, n, q]: (a + b) of the halves,
    the odd element carried, level by level; the first level from v into a buffer, the rest in it."""
    src, n, buf = v, v.shape[2], None
    while n > 1:
        half = n // 2
        if buf is None:
            buf = np.empty(v.shape[:2] + (half + n % 2,) + v.shape[3:])
        np.add(src[:, :, :half], src[:, :, half:2 * half], out=buf[:, :, :half])
        if n % 2:
            buf[:, :, half] = src[:, :, 2 * half]
        src, n = buf, half + n % 2
    dst[...] = src[:, :, 0]


def _attach_theory(result: SimulationResult) -> None:
    """Exact theory beside the statistics; where it overflows or does not exist, the reason instead."""
    cfg = result.config
    if cfg.problem != "quadratic":
        return
    from . import theory
    spectra = drawn_spectra(cfg)
    try:
        expected = exact_theory(cfg, spectra)
    except (NotImplementedError, ValueError, ArithmeticError) as exc:
        result.theory_unavailable = f"exact theory not available here: {type(exc).__name__}: {exc}"
        return
    if not all(np.isfinite(v).all() for v in expected.values()):
        result.theory_unavailable = "exact theory overflows float64 for these options (a diverging ensemble)"
        return
    result.theory = expected
    if cfg.ledger:
        result.theory_ledger = exact_ledger(cfg, spectra)
    if cfg.noisy and cfg.nesterov_r is None:
        try:
            with np.errstate(all="ignore"):
                stationary = {k: float(v) for k, v in theory.stationary(cfg).items()}
        except (NotImplementedError, ValueError, ArithmeticError):
            return
        if all(math.isfinite(v) for v in stationary.values()):
            result.stationary = stationary


def exact_theory(cfg: SimulationConfig, spectra=None) -> dict:
    """theory.expected at cfg.recorded_steps, with floating-point warnings of an overflowing theory silenced
    (the caller reports non-finite values as unavailable)."""
    from . import theory
    with np.errstate(all="ignore"):
        return theory.expected(cfg, spectra=spectra)


def exact_ledger(cfg: SimulationConfig, spectra=None) -> dict:
    """theory.ledger's E[D], E[Q], E[W] (and T_eff under a temperature) at cfg.recorded_steps; {} where the
    ledger theory does not exist or overflows (the run's own ledger stands without it)."""
    from . import theory
    try:
        with np.errstate(all="ignore"):
            exact = theory.ledger(cfg, spectra=spectra)
    except (NotImplementedError, ValueError, ArithmeticError):
        return {}
    keys = LEDGER + (("effective_temperature",) if cfg.noise_model == "temperature" else ())
    out = {k: np.asarray(exact[k]) for k in keys}
    return out if all(np.isfinite(v).all() for v in out.values()) else {}


def drawn_spectra(cfg: SimulationConfig, first: int = 0) -> np.ndarray | None:
    """Drawn eigenvalues [M, d] of trajectories first.. (float64; at most SPECTRUM_SAMPLE), None if shared.

    The theory of a drawn spectrum is the mean over these rows: the run's own draws, not a fresh sample.
    """
    if cfg.distribution is None:
        return None
    import torch

    from .reference import Model
    model = Model(dataclasses.replace(cfg, dtype="float64", device="cpu"))
    n = min(cfg.trajectories, SPECTRUM_SAMPLE)
    return model.eigenvalues(torch.arange(first, first + n)).numpy()


RECORDS_ANY_STEPS = ("torch", "triton")  # backends whose kernels record from a per-window table of steps


def _able_to_record(config: SimulationConfig, backend):
    """The backend, if it records any set of steps; kernels that test n % K record only 0, K, 2K, ...

    auto falls back to the torch reference for such runs; an explicit backend is refused.
    """
    if is_arithmetic(config.steps, config.record_every) or getattr(backend, "records_any_steps", False) \
            or backend.name in RECORDS_ANY_STEPS:
        return backend
    if config.backend == "auto":
        return backends.backend_class("torch")()
    raise ConfigError(f"--record-every: --backend {config.backend} records only steps 0, K, 2K, ... for now; "
                      f"with --steps {config.steps} and --record-every {config.record_every} use --backend torch "
                      f"or --steps a multiple of K")


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def advance(self, n):
        pass


class _RichBar(_NoBar):
    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        self.progress = Progress(TextColumn("trajectory-steps"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), transient=True)
        self.task = self.progress.add_task("run", total=total)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def advance(self, n):
        self.progress.advance(self.task, n)


def _progress(enabled: bool, total: int):
    return _RichBar(total) if enabled else _NoBar()
