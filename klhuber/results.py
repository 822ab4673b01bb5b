"""Results files with provenance.

Every expensive computation (a full-profile toy sweep, a detector training) writes one JSON
file holding its payload and a ``provenance`` block: the command that produced it, the git
commit, the device, library versions, the date and the wall time. The book renders these
files when the computation cannot be repeated on the reader's machine, and says where they
came from.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "git_commit",
    "load_results",
    "provenance",
    "save_results",
]


def _checkout_root() -> Path | None:
    """The klhuber source checkout this package is imported from (an editable install or
    ``python -m`` from the checkout), or ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if 'name = "klhuber"' in text else None


#: The klhuber checkout holding this package, ``None`` when it is installed from a wheel.
CHECKOUT_ROOT: Path | None = _checkout_root()


@functools.cache
def _umask() -> int:
    """The process umask, read once (reading it means setting it, which is not thread-safe)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current git commit (with ``-dirty`` when the tree has changes), or ``None``.

    By default the commit of the klhuber checkout this package is imported from, and only
    when that checkout is the top of its git repository: an installed wheel records no
    commit (``KLHUBER_GIT_COMMIT`` can supply one), not that of whatever repository encloses
    the working directory.
    """
    if cwd is None:
        if CHECKOUT_ROOT is None:
            return os.environ.get("KLHUBER_GIT_COMMIT")
        cwd = CHECKOUT_ROOT
        try:
            top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd,
                                 capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return os.environ.get("KLHUBER_GIT_COMMIT")
        if Path(top).resolve() != CHECKOUT_ROOT:
            return os.environ.get("KLHUBER_GIT_COMMIT")
    cwd = Path(cwd)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("KLHUBER_GIT_COMMIT")
    return commit + ("-dirty" if dirty else "")


def _versions() -> dict[str, str]:
    from klhuber import __version__

    versions = {"python": platform.python_version(), "klhuber": __version__}
    for name in ("torch", "torchvision", "numpy", "scipy", "sympy", "mpmath"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        versions[name] = getattr(module, "__version__", "unknown")
    return versions


def _klhuber_version() -> str:
    from klhuber import __version__

    return __version__


def _device_description(device: str | None) -> str:
    if device is None:
        return platform.processor() or platform.machine()
    if str(device).startswith("cuda"):
        try:
            import torch

            if torch.cuda.is_available():
                return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        except Exception:  # pragma: no cover - best effort description only
            pass
    return f"{device} ({platform.machine()}, {os.cpu_count()} logical CPUs)"


def provenance(
    *,
    command: str | list[str] | None = None,
    device: str | None = None,
    wall_time_s: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A provenance record: command, klhuber version, git commit (only inside a klhuber
    checkout, :func:`git_commit`), device, versions, UTC date, wall time."""
    if command is None:
        command = " ".join(sys.argv)
    elif not isinstance(command, str):
        command = " ".join(map(str, command))
    record: dict[str, Any] = {
        "command": command,
        "klhuber_version": _klhuber_version(),
        "git_commit": git_commit(),
        "device": _device_description(device),
        "versions": _versions(),
        "host": platform.node(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": None if wall_time_s is None else round(float(wall_time_s), 3),
    }
    if extra:
        record.update(dict(extra))
    return record


def save_results(
    path: str | os.PathLike,
    payload: Mapping[str, Any],
    *,
    provenance_record: Mapping[str, Any] | None = None,
    **provenance_kwargs: Any,
) -> Path:
    """Write ``{"provenance": ..., **payload}`` as JSON, atomically.

    Either pass a ready ``provenance_record`` or the keyword arguments of :func:`provenance`.
    """
    if "provenance" in payload:
        raise ValueError("payload must not contain the key 'provenance'; it is added here")
    record = dict(provenance_record) if provenance_record is not None else provenance(**provenance_kwargs)
    document = {"provenance": record, **payload}
    text = json.dumps(document, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON written by :func:`save_results`; it must carry a provenance block."""
    path = Path(path)
    document = json.loads(path.read_text(encoding="utf-8"))
    if "provenance" not in document:
        raise ValueError(f"{path} has no 'provenance' block; it was not written by klhuber")
    return document


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
