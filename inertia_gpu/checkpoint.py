"""Checkpoint and resume of an ensemble run, bit for bit.

The engine's progress is small and exact: the replicate-sum table and the
first-passage histogram of the chunks already done, plus the per-trajectory
state (theta, momentum, I_0, first passage, the ledger's cumulative D and Q)
of the chunk in flight and the step it reached. Because every random number is a pure function of
(seed, trajectory, step, coordinate) and every sum has a fixed shape, a run
resumed from that progress computes exactly the bits an uninterrupted run
would.

File format (one file, written atomically: temporary file in the same
directory, fsync, rename, fsync of the directory)::

    b"INERTIA-GPU-CHECKPOINT 2\\n"    (the format version; a file of another version is refused)
    <sha256 of the payload, 64 hex digits>\\n
    <payload: torch.save of a dict of tensors and plain values>

A file whose magic or checksum does not match is corrupt; a file written for
another configuration (fingerprint of every resolved option, the backend,
the shard and the format version) is refused; so is a file whose structure
does not fit the run (shapes, dtypes, counts beyond the trajectories, a step
beyond --steps, progress in replicates not yet run), even under a valid
checksum. While a run uses a checkpoint it holds a lock on PATH.lock: a
second run on the same path is refused. All are a ConfigError: one line,
exit status 2 from the CLI.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .backends.base import FRACTIONS, N_COLUMNS, ChunkState, host_array
from .config import ConfigError, SimulationConfig
from .output import write_atomic

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# 2: the table carries the ledger columns (spec.COLUMNS) and the state its cumulative (D, Q)
VERSION = 2
PREFIX = b"INERTIA-GPU-CHECKPOINT "
MAGIC = PREFIX + f"{VERSION}\n".encode()


def fingerprint(config: SimulationConfig, backend: str, shard=None) -> str:
    """sha256 of what determines the bits of a run: every resolved option, the backend, the shard."""
    desc = {"version": VERSION, "config": config.to_dict(), "backend": backend,
            "shard": None if shard is None else [shard.rank, shard.world]}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


@dataclass
class Progress:
    chunk: int  # trajectories per launch of the run that wrote the file
    chunk_index: int  # chunks of this process completed
    step: int  # steps done in chunk `chunk_index` (0: not started)
    table: np.ndarray
    hist: np.ndarray
    state: ChunkState | None

    def check(self, config: SimulationConfig, p, own: tuple[int, int]) -> None:
        """Refuse progress that does not fit this run: shapes, dtypes, counts, steps (ConfigError)."""
        problem = _structure_problem(self, config, p, own)
        if problem:
            raise ConfigError(f"--checkpoint: the file does not fit this run ({problem}); delete it to start over")


def _structure_problem(prog: Progress, config: SimulationConfig, p, own: tuple[int, int]) -> str | None:
    first, last = own
    records = config.recorded_count
    if not isinstance(prog.chunk, int) or prog.chunk <= 0 or prog.chunk % p.replicate_size:
        return f"chunk {prog.chunk!r} is not a positive multiple of the replicate size {p.replicate_size}"
    n_chunks = -(-(last - first) // prog.chunk)
    if not isinstance(prog.chunk_index, int) or not 0 <= prog.chunk_index <= n_chunks:
        return f"chunk index {prog.chunk_index!r} outside [0, {n_chunks}]"
    if not isinstance(prog.step, int) or not 0 <= prog.step < config.steps:
        return f"step {prog.step!r} outside [0, {config.steps})"
    if (prog.step > 0) != (prog.state is not None) or (prog.state is not None and prog.chunk_index == n_chunks):
        return "in-flight state and step disagree"
    if prog.table.shape != (records, p.replicates, N_COLUMNS) or prog.table.dtype != np.float64:
        return f"table {prog.table.shape} {prog.table.dtype}, expected {(records, p.replicates, N_COLUMNS)} float64"
    if prog.hist.shape != (len(FRACTIONS), config.steps + 2) or prog.hist.dtype != np.int64 or (prog.hist < 0).any():
        return "first-passage histogram of the wrong shape, type or sign"
    sizes = np.minimum(p.replicate_size, config.trajectories - np.arange(p.replicates) * p.replicate_size)
    done_end = first + prog.chunk_index * prog.chunk + (prog.chunk if prog.state is not None else 0)
    started = (np.arange(p.replicates) * p.replicate_size < min(done_end, last)) \
        & (np.arange(p.replicates) * p.replicate_size >= first)
    counts = prog.table[..., 0]
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts > sizes[None, :]).any() \
            or (counts != np.round(counts)).any():
        return "trajectory counts beyond the replicate sizes"
    if (prog.table[:, ~started] != 0).any():
        return "sums in replicates this run has not reached"
    finished = min(first + prog.chunk_index * prog.chunk, last) - first
    if (prog.hist.sum(axis=1) != finished).any():
        return f"first-passage histogram counts {prog.hist.sum(axis=1).tolist()}, expected {finished} each"
    if prog.state is not None:
        return _state_problem(prog.state, config, min(prog.chunk, last - first - prog.chunk_index * prog.chunk),
                              prog.step)
    return None


def _state_problem(state: ChunkState, config: SimulationConfig, count: int, step: int) -> str | None:
    dtype = DTYPES[config.dtype]
    want = {"theta": ((count, config.dim), dtype), "momentum": ((count, config.dim), dtype),
            "inertia0": ((count,), None), "first_passage": ((count, len(FRACTIONS)), torch.int32),
            "ledger": ((count, 2), torch.float64)}
    for name, (shape, dt) in want.items():
        t = getattr(state, name)
        if tuple(t.shape) != shape or (dt is not None and t.dtype != dt):
            return f"state {name} {tuple(t.shape)} {t.dtype}, expected {shape}"
    fp = state.first_passage
    if ((fp < -1) | (fp > step)).any():
        return "first-passage steps outside [-1, step]"
    return None


class Checkpoint:
    def __init__(self, path: str, config: SimulationConfig, backend: str, shard=None):
        if shard is not None and shard.world > 1:
            path = f"{path}.rank{shard.rank}of{shard.world}"
        self.path = path
        self.device = config.device
        self.fingerprint = fingerprint(config, backend, shard)
        self._lock_fd = _lock(f"{path}.lock", path)

    def close(self) -> None:
        """Release the lock (the lock file is removed: the next run creates its own)."""
        if getattr(self, "_lock_fd", None) is None:
            return
        import fcntl
        try:
            os.unlink(f"{self.path}.lock")
        except OSError:
            pass
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)
        self._lock_fd = None

    def __del__(self):
        self.close()

    # --- writing -----------------------------------------------------------------
    def save(self, chunk: int, chunk_index: int, step: int, table: np.ndarray, hist: np.ndarray,
             state: ChunkState | None) -> None:
        payload = {
            "version": VERSION, "fingerprint": self.fingerprint, "chunk": int(chunk),
            "chunk_index": int(chunk_index), "step": int(step),
            "table": torch.from_numpy(np.ascontiguousarray(table)),
            "hist": torch.from_numpy(np.ascontiguousarray(hist)),
            # numpy state (the numba backend's) is stored as tensors too: one file format for every backend
            "state": None if state is None else [torch.from_numpy(host_array(t)) for t in
                                                 (state.theta, state.momentum, state.inertia0, state.first_passage,
                                                  state.ledger)],
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        # a failed write (full disk) leaves the previous checkpoint intact: one line, rerun resumes from it
        write_atomic(self.path, MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data, "--checkpoint")

    # --- reading -----------------------------------------------------------------
    def load(self) -> Progress | None:
        """The saved progress; None when there is no file. Raises ConfigError when it cannot be used."""
        if not os.path.exists(self.path):
            return None
        payload = read_verified(self.path)
        if payload.get("version") != VERSION:
            raise ConfigError(f"--checkpoint {self.path}: format version {payload.get('version')} is not "
                              f"{VERSION}; delete it to start over")
        if payload.get("fingerprint") != self.fingerprint:
            raise ConfigError(f"--checkpoint {self.path}: written for a different configuration "
                              f"(fingerprint {str(payload.get('fingerprint'))[:12]} != {self.fingerprint[:12]}); "
                              "rerun with the options that wrote it, or delete it / use another path")
        state, raw = None, payload["state"]
        tensors = [payload.get("table"), payload.get("hist")] + (list(raw) if isinstance(raw, (list, tuple)) else [])
        if not all(isinstance(t, torch.Tensor) for t in tensors) or (raw is not None and len(tensors) != 7):
            raise ConfigError(f"--checkpoint {self.path}: the file does not fit this run (fields of the wrong type); "
                              "delete it to start over")
        if raw is not None:
            state = ChunkState(*(t.to(self.device) for t in raw))
        return Progress(payload.get("chunk"), payload.get("chunk_index"), payload.get("step"),
                        payload["table"].numpy(), payload["hist"].numpy(), state)


def read_verified(path: str) -> dict:
    def corrupt(why: str) -> ConfigError:
        return ConfigError(f"--checkpoint {path}: corrupt or truncated checkpoint ({why}); delete it to start over")

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"--checkpoint {path}: cannot read it ({exc.strerror})") from None
    if not raw.startswith(MAGIC):
        if raw.startswith(PREFIX):
            version = raw[len(PREFIX):raw.find(b"\n", len(PREFIX))].decode("ascii", "replace")[:16]
            raise ConfigError(f"--checkpoint {path}: written in checkpoint format {version}, this version reads "
                              f"format {VERSION}; delete it to start over")
        raise corrupt("not an inertia-gpu checkpoint")
    head = len(MAGIC)
    digest, data = raw[head:head + 64], raw[head + 65:]
    if len(raw) < head + 65 or raw[head + 64:head + 65] != b"\n":
        raise corrupt("header cut short")
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise corrupt("checksum mismatch")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a valid checksum over an unreadable payload: a foreign writer
        raise corrupt(f"unreadable payload: {type(exc).__name__}") from None
    if not isinstance(payload, dict) or not {"fingerprint", "table", "hist", "state"} <= payload.keys():
        raise corrupt("missing fields")
    return payload


def _lock(lock_path: str, path: str) -> int:
    """An exclusive lock for the run's lifetime; ConfigError when another run holds it."""
    import fcntl
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"--checkpoint {path}: cannot create the lock file {lock_path} ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"--checkpoint {path}: in use by another run (locked: {lock_path}); "
                          "wait for it or use another path") from None
    return fd
