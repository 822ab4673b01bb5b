"""Compile a C++ source into a shared library on first use and cache it (internal).

Used by the fused gradient-descent kernel of :mod:`klhuber.toy` and the fused KL-loss kernel
of the losses' default path.  A library is built once per
source, key, compiler and CPU with ``-O3 -march=native`` (no ``-ffast-math``, which would
change the floating-point mode of the whole process) and cached in ``$KLHUBER_CACHE`` (default
``~/.cache/klhuber``).  ``KLHUBER_NO_KERNEL=1`` disables it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["compile_library"]


def compile_library(source: str, stem: str, *, flags: Sequence[str] = (),
                    key: Sequence[str] = (),
                    on_build: Callable[[], None] | None = None) -> ctypes.CDLL | None:
    """The library built from ``source``, or None (no C++ compiler, a failed build,
    ``KLHUBER_NO_KERNEL`` set).

    The file is ``$KLHUBER_CACHE/<stem>_<hash>.so``; the hash covers ``source``, ``key`` (what
    ``flags`` adds to the source, e.g. a ``-D`` value), the compiler and the CPU.
    ``on_build`` is called after each actual compilation (not for a cached library).
    """
    if os.environ.get("KLHUBER_NO_KERNEL"):
        return None
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return None
    try:
        cpu = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        cpu = ""
    tag = hashlib.sha256("\0".join([source, *key, cxx, platform.machine(), cpu]).encode())
    cache = Path(os.environ.get("KLHUBER_CACHE", Path.home() / ".cache" / "klhuber"))
    so = cache / f"{stem}_{tag.hexdigest()[:16]}.so"
    if not so.exists():
        base = [cxx, "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared",
                "-fPIC", *flags]
        try:
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                src = Path(tmp) / "kernel.cpp"
                src.write_text(source)
                out = Path(tmp) / "kernel.so"
                proc = subprocess.run(base + ["-o", str(out), str(src), "-lm"], capture_output=True,
                                      timeout=300)
                if proc.returncode != 0:
                    return None
                os.replace(out, so)
            if on_build is not None:
                on_build()
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        return ctypes.CDLL(str(so))
    except OSError:  # e.g. a library left by another CPU or a damaged file
        return None
