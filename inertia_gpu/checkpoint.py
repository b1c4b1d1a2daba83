"""Checkpoint and resume of an ensemble run, bit for bit.

The engine's progress is small and exact: the replicate-sum table and the
first-passage histogram of the chunks already done, plus the per-trajectory
state (theta, momentum, I_0, first passage) of the chunk in flight and the
step it reached. Because every random number is a pure function of
(seed, trajectory, step, coordinate) and every sum has a fixed shape, a run
resumed from that progress computes exactly the bits an uninterrupted run
would.

File format (one file, written atomically: temporary file in the same
directory, fsync, rename, fsync of the directory)::

    b"INERTIA-GPU-CHECKPOINT 1\\n"
    <sha256 of the payload, 64 hex digits>\\n
    <payload: torch.save of a dict of tensors and plain values>

A file whose magic or checksum does not match is corrupt; a file written for
another configuration (fingerprint of every resolved option, the backend,
the shard and the format version) is refused. Both are a ConfigError: one
line, exit status 2 from the CLI.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .backends.base import ChunkState
from .config import ConfigError, SimulationConfig

VERSION = 1
MAGIC = f"INERTIA-GPU-CHECKPOINT {VERSION}\n".encode()


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


class Checkpoint:
    def __init__(self, path: str, config: SimulationConfig, backend: str, shard=None):
        if shard is not None and shard.world > 1:
            path = f"{path}.rank{shard.rank}of{shard.world}"
        self.path = path
        self.device = config.device
        self.fingerprint = fingerprint(config, backend, shard)

    # --- writing -----------------------------------------------------------------
    def save(self, chunk: int, chunk_index: int, step: int, table: np.ndarray, hist: np.ndarray,
             state: ChunkState | None) -> None:
        payload = {
            "version": VERSION, "fingerprint": self.fingerprint, "chunk": int(chunk),
            "chunk_index": int(chunk_index), "step": int(step),
            "table": torch.from_numpy(np.ascontiguousarray(table)),
            "hist": torch.from_numpy(np.ascontiguousarray(hist)),
            "state": None if state is None else [t.detach().to("cpu").contiguous() for t in
                                                 (state.theta, state.momentum, state.inertia0, state.first_passage)],
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
        write_atomic(self.path, MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)

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
        state = None
        if payload["state"] is not None:
            state = ChunkState(*(t.to(self.device) for t in payload["state"]))
        return Progress(payload["chunk"], payload["chunk_index"], payload["step"], payload["table"].numpy(),
                        payload["hist"].numpy(), state)


def read_verified(path: str) -> dict:
    def corrupt(why: str) -> ConfigError:
        return ConfigError(f"--checkpoint {path}: corrupt or truncated checkpoint ({why}); delete it to start over")

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise ConfigError(f"--checkpoint {path}: cannot read it ({exc.strerror})") from None
    if not raw.startswith(MAGIC):
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


def write_atomic(path: str, data: bytes) -> None:
    """Temporary file beside `path`, fsync, rename over it, fsync the directory: never a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
