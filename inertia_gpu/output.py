"""Every file a run writes: paths checked before the work, atomic writes, strict JSON.

`check_path` runs before any simulation (a bad --json, --plot, --checkpoint
or --out is found in a second, not after an hour). `write_atomic` writes a
temporary file beside the target, fsyncs and renames it over the target;
the temporary file is removed on every failure, so the target is either the
old file or the new one. `write_json` is the one JSON writer: strict JSON
(no NaN or Infinity: a non-finite number becomes null, and the producers add
the reason beside it).
"""
from __future__ import annotations

import json
import math
import os
import tempfile

from .config import ConfigError

PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf", "raw", "rgba")


class OutputError(ConfigError):
    """A result could not be written: one line naming the option and the reason."""


def check_path(option: str, path, formats: tuple[str, ...] | None = None) -> str:
    """Refuse, before any work, a path the run could not write: one line naming `option`.

    The directory must exist and accept a new file (checked by creating and removing one);
    the path must not be a directory; `formats`: the allowed extensions.
    """
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"{option}: needs a file name, got {path!r}")
    if os.path.isdir(path):
        raise ConfigError(f"{option}: {path} is a directory; give a file name")
    if formats is not None:
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        if ext not in formats:
            raise ConfigError(f"{option}: cannot write .{ext or '(no extension)'} files; use one of "
                              f".{', .'.join(formats)}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{option}: directory {directory} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise ConfigError(f"{option}: {path} exists and is not writable")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".probe")
    except OSError as exc:
        raise ConfigError(f"{option}: cannot write in {directory} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_atomic(path: str, data: bytes, option: str = "output") -> None:
    """Temporary file beside `path`, fsync, rename over it, fsync the directory: never a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise OutputError(f"{option}: could not write {path} ({exc.strerror or exc}); "
                          "nothing was replaced") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
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


def strict(value):
    """`value` with every non-finite float as None and numpy scalars/arrays as Python values."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return strict(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def finite_list(values) -> list:
    """Floats of a 1-d array, None where not finite."""
    return [float(x) if math.isfinite(x) else None for x in (float(v) for v in values)]


def dumps(obj) -> str:
    return json.dumps(strict(obj), indent=1, allow_nan=False)


def write_json(path: str, obj, option: str = "--json") -> None:
    write_atomic(path, dumps(obj).encode(), option)


def save_figure(fig, path: str, option: str = "--plot", dpi: int = 120) -> None:
    """A matplotlib figure written atomically in the format of the path's extension."""
    import io
    buf = io.BytesIO()
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    fig.savefig(buf, format=fmt, dpi=dpi)
    write_atomic(path, buf.getvalue(), option)
