"""Process-wide settings that make CPU training faster: keeping freed memory for reuse.

A training step on the CPU allocates the same large buffers every time (activations ``[T, B, 4H]``,
their gradients, oneDNN's workspace for ``torch.nn.LSTM``) and frees them at its end. glibc's
``malloc`` serves blocks above a threshold (128 KiB, adapting up to 32 MiB) with fresh ``mmap``
pages and returns them to the system when freed, and it also trims the top of its heap: the next
step then takes a page fault on the first write to every 4 KiB page. On our 2-core development
VM a fault cost about 1.5 µs, so an LSTM step at ``H=1024, B=64, T=100`` spent a fifth of its
time in the kernel: ``torch.nn.LSTM`` took 130k faults and 1,055 ms a step, 860 ms without them;
the layer-norm engine 217k faults, 1,367 ms against 1,056; at ``H=256`` ``torch.nn.LSTM`` went
from 101 to 82 ms (``python benchmarks/bench_page_faults.py``, ``benchmarks/RESULTS.md``). How many faults a step takes depends on the
allocator's history, which is why its speed moved between 47k and 77k tokens/s from run to run.

:func:`reuse_freed_memory` raises both thresholds to 1 GiB (``mallopt``), so freed blocks stay in
the process and are reused. The price is memory: the process keeps the peak of what it freed
instead of returning it, as caching allocators (PyTorch's on GPUs, jemalloc, tcmalloc) do. The
``rnnkit`` command line applies it at start-up unless ``RNNKIT_REUSE_FREED_MEMORY=0``; library
code never changes it behind the caller's back, so a Python program opts in by calling it.
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824``
set before Python starts does the same for any program.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import tempfile
import threading
from pathlib import Path

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 1 << 30
ENV = "RNNKIT_REUSE_FREED_MEMORY"

_LOCK = threading.Lock()
_applied = False


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None  # macOS, Windows and musl have their own allocators: nothing to set
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def reuse_freed_memory(threshold_bytes: int = THRESHOLD_BYTES) -> bool:
    """Keep freed memory in the process for reuse (glibc only); ``True`` where it took effect.

    Sets glibc's ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to ``threshold_bytes`` (1 GiB):
    blocks up to that size come from the heap, and the heap is not trimmed until that much is free
    at its top. A no-op returning ``False`` on other C libraries and systems. Safe to call more
    than once.
    """
    global _applied
    if threshold_bytes < 1 << 20:
        raise ValueError(f"threshold_bytes must be at least 1 MiB, got {threshold_bytes}")
    libc = _glibc()
    if libc is None:
        return False
    with _LOCK:
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(threshold_bytes, 2**31 - 1))))
        ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(min(threshold_bytes, 2**31 - 1)))) and ok
        _applied = _applied or ok
    return ok


def reuse_freed_memory_from_env() -> bool:
    """:func:`reuse_freed_memory` unless ``RNNKIT_REUSE_FREED_MEMORY`` is ``0``, ``false`` or ``no``
    (what the ``rnnkit`` command does at start-up)."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value not in ("", "1", "true", "yes", "on"):
        raise ValueError(f"{ENV} must be 1 or 0, got {value!r}")
    return reuse_freed_memory()


def return_freed_memory() -> bool:
    """Hand the memory glibc keeps free back to the system now (``malloc_trim``); ``True`` where it ran.

    The opposite of :func:`reuse_freed_memory`, once: ``rnnkit compare`` calls it between runs so
    that each run's growth of the resident set is its own. A no-op returning ``False`` elsewhere.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def freed_memory_reused() -> bool:
    """Whether :func:`reuse_freed_memory` has taken effect in this process."""
    return _applied


def _read_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere it can only be read by setting it: done once, at import
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _read_umask()


def new_file_mode() -> int:
    """The permissions a file created the usual way gets here: ``0o666`` less the process umask.

    Atomic writers create a private temporary file (``tempfile.mkstemp`` and safetensors use
    ``0o600``) and rename it into place; they set this mode first, so saved models and run files
    stay readable by whoever could read a file written with ``open()``. The umask is read from
    ``/proc/self/status`` on Linux (the current value, and no other thread ever sees it changed);
    elsewhere it is the value at import, read once by setting and restoring it.
    """
    mask = _read_umask() if platform.system() == "Linux" else _UMASK_AT_IMPORT
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it into place
    (usual permissions): a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp's files are 0o600; a run folder's files are read by others too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
