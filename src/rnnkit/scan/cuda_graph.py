"""Replaying a per-step loop as a CUDA graph: the host's launch work paid once per shape.

The engines' Triton paths (``implementation="triton"``: :mod:`rnnkit.scan.engine`,
:mod:`~rnnkit.scan.engine_layernorm`, :mod:`~rnnkit.scan.engine_gru`) run a step as one matmul
and one kernel, but on a GPU the host still spends a few hundred microseconds per step on Python
and launches while the GPU does about fifty (profiled on an H100: kernels were 10-18% of the
wall time, ``benchmarks/RESULTS.md``). A CUDA graph records the loop's launches once and
replays them with one call. :class:`CapturedLoop` does that for a function of tensors:

* the first call with a new key and shapes runs eagerly: recording costs about two eager runs,
  which a shape that never comes back (bucketed lengths, an epoch's short last batch) would not
  repay;
* the second copies its inputs into static buffers, runs the function once on a side stream
  (Triton compiles, cuBLAS sets up its workspace), records it (recording launches nothing) and
  replays; a recording holds about one call's activations on the GPU, and the most recently
  used are kept (``CACHE_SIZE`` of them, their inputs and outputs within ``CACHE_BYTES`` and
  ``CACHE_FRACTION`` of the device's memory); a shape whose recording was evicted runs eagerly
  for ``REWAIT`` calls and is then recorded again. The wait starts over at ``REWAIT`` when the
  evicted recording had been replayed at least ``REPAID`` times (it paid for itself: the
  training shapes pushed out by each round of dev evaluation come back within a few calls every
  epoch) and doubles when it had not (more shapes in turn than the cache keeps: recordings then
  grow rare instead of costing a recording per call); a shape that cannot be recorded (an error)
  or kept (larger than the cache) runs eagerly from then on;
* every call copies its inputs into those buffers and replays; the function's outputs live in
  the graph's memory pool and are overwritten by the next replay, so :func:`run_captured` hands
  back copies.

A function fit for recording allocates nothing it returns outside the tensors it is given or
makes itself, never synchronises with the host (no ``.item()``, no data-dependent shapes) and
draws no random numbers: the engine draws its dropout and zoneout masks before, and passes them
in. Where a graph cannot or should not be recorded (not CUDA, the stream already recording,
:func:`disabled`, ``RNNKIT_CUDA_GRAPHS=0``) :func:`graphs_enabled` says no and the caller runs
eagerly.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

Inputs = dict[str, Tensor | None]
Outputs = dict[str, Tensor | None]

_CACHE: OrderedDict[Hashable, CapturedLoop] = OrderedDict()
CACHE_SIZE = 32  # recorded loops kept (each holds its static inputs and its memory pool) ...
CACHE_BYTES = 4 * 2**30  # ... and the most GPU memory their inputs and outputs may hold together (at most
CACHE_FRACTION = 0.125   # this fraction of the device's memory)
_SEEN: OrderedDict[Hashable, None] = OrderedDict()  # keys run once, eagerly: the next call records
_UNRECORDABLE: OrderedDict[Hashable, None] = OrderedDict()  # recording failed or too large: eager from then on
_BACKOFF: OrderedDict[Hashable, list[int]] = OrderedDict()  # evicted keys: [eager calls left, wait] before recording
SEEN_SIZE = 4096  # keys remembered in each
_REPLAYS: dict[Hashable, int] = {}  # cache hits of each kept recording
REWAIT = 8  # eager calls of an evicted key before it is recorded again ...
REPAID = 8  # ... a wait that starts over after a recording replayed this often, and doubles after one replayed less


_DISABLED: ContextVar[bool] = ContextVar("rnnkit_cuda_graphs_disabled", default=False)


@contextmanager
def disabled() -> Iterator[None]:
    """Within this block the engine runs its loops eagerly (a forward decides for its backward too)."""
    token = _DISABLED.set(True)
    try:
        yield
    finally:
        _DISABLED.reset(token)


def graphs_enabled(device: torch.device) -> bool:
    """Whether a loop on ``device`` may be recorded as a CUDA graph now.

    No on a CPU, inside :func:`disabled`, with ``RNNKIT_CUDA_GRAPHS=0`` in the environment, or while
    the current stream is itself being recorded (someone else's graph: then the loop is recorded
    into theirs, eagerly).
    """
    if device.type != "cuda" or _DISABLED.get() or os.environ.get("RNNKIT_CUDA_GRAPHS", "1") in ("0", ""):
        return False
    with torch.cuda.device(device):  # the stream that would record is the tensors' device's
        return not torch.cuda.is_current_stream_capturing()


def shape_key(inputs: Inputs) -> tuple[object, ...]:
    """What a recording depends on: each input's name, shape, dtype and device (or its absence)."""
    return tuple((name, None if t is None else (tuple(t.shape), t.dtype, t.device)) for name, t in inputs.items())


class CapturedLoop:
    """``fn(**inputs) -> outputs`` recorded once as a CUDA graph, then replayed on fresh inputs."""

    def __init__(self, fn: Callable[..., Outputs], inputs: Inputs) -> None:
        self.static: Inputs = {name: None if t is None else torch.empty(t.shape, dtype=t.dtype, device=t.device)
                               for name, t in inputs.items()}
        self._copy_in(inputs)
        self.device = next(t.device for t in inputs.values() if t is not None)
        # the recording captures the current device's stream: make it the tensors' device
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the recording: compiles, allocates workspaces
                fn(**self.static)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: backward runs on autograd's device thread while e.g. a pin-memory thread
            # allocates; "global" would fail the recording over such calls from other threads. The
            # capture stream is the device's own: torch's default one lives on the first device used.
            with torch.cuda.graph(self.graph, stream=_capture_stream(self.device), capture_error_mode="thread_local"):
                self.outputs = fn(**self.static)
        self.nbytes = _nbytes(self.static) + _nbytes(self.outputs)

    def _copy_in(self, inputs: Inputs) -> None:
        for name, t in inputs.items():
            static = self.static[name]
            if static is not None and t is not None:
                static.copy_(t)

    def __call__(self, inputs: Inputs) -> Outputs:
        """Replay on ``inputs`` (same names and shapes as the recording); the outputs are the graph's."""
        self._copy_in(inputs)
        with torch.cuda.device(self.device):
            self.graph.replay()
        return self.outputs


_CAPTURE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}
_LOCK = threading.RLock()  # one recording at a time per process; the caches are shared by threads (DataParallel)


def _capture_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in _CAPTURE_STREAMS:
        _CAPTURE_STREAMS[device] = torch.cuda.Stream(device)
    return _CAPTURE_STREAMS[device]


def _device_bytes(loop: CapturedLoop) -> float:
    device = getattr(loop, "device", None)
    if device is None or device.type != "cuda":
        return float("inf")
    return float(torch.cuda.get_device_properties(device).total_memory)


def _remember(keys: OrderedDict[Hashable, None], key: Hashable) -> None:
    keys[key] = None
    keys.move_to_end(key)
    while len(keys) > SEEN_SIZE:
        keys.popitem(last=False)


def _nbytes(tensors: Inputs) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values() if t is not None)


def run_captured(key: Hashable, fn: Callable[..., Outputs], inputs: Inputs) -> tuple[Outputs, bool]:
    """``(fn(**inputs), recorded)``: through the recording kept under ``(key, shapes)`` where there is one.

    The outputs are the caller's either way: a replay's are copied out of the recording's memory
    before the lock is released, so another thread's replay cannot overwrite them. A key and
    shapes seen for the first time run ``fn`` eagerly (outside the lock), and so does one that
    could not be recorded or kept (an error, too large, evicted before).
    """
    # tensors made under inference_mode cannot be written outside it, and the float32 matmul
    # precision is fixed into a recording: neither is crossed by a replay
    full_key = (key, shape_key(inputs), torch.is_inference_mode_enabled(),
                torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    with _LOCK:
        loop = _CACHE.get(full_key)
        if loop is not None:
            _CACHE.move_to_end(full_key)
            _REPLAYS[full_key] = _REPLAYS.get(full_key, 0) + 1
            return _owned(loop(inputs)), True
        # a shape seen once (bucketed lengths, a last short batch), one whose recording failed or was too
        # large, or one evicted and still waiting (more shapes in turn than the cache keeps would otherwise
        # record on every call)
        eager = full_key not in _SEEN or full_key in _UNRECORDABLE or _waiting(full_key)
        _remember(_SEEN, full_key)
        if not eager:
            loop = _record(full_key, fn, inputs)
            if loop is not None:
                return _owned(loop(inputs)), True
    return fn(**inputs), False


def _record(full_key: Hashable, fn: Callable[..., Outputs], inputs: Inputs) -> CapturedLoop | None:
    """A new recording kept under ``full_key``, or ``None`` (marked eager) when it fails or cannot be kept."""
    try:
        loop = CapturedLoop(fn, inputs)  # recording launches nothing: the caller's replay computes
    except Exception as err:  # noqa: BLE001  # out of memory, an op that cannot be captured: run eagerly
        _remember(_UNRECORDABLE, full_key)
        warnings.warn(f"rnnkit: recording a CUDA graph failed ({type(err).__name__}: {err}); this shape runs "
                      "eagerly from now on", RuntimeWarning, stacklevel=4)
        return None
    limit = min(CACHE_BYTES, CACHE_FRACTION * _device_bytes(loop))
    if loop.nbytes > limit:  # one recording alone would not fit: eager for this shape
        _remember(_UNRECORDABLE, full_key)
        return None
    _CACHE[full_key] = loop
    _REPLAYS[full_key] = 0
    while len(_CACHE) > CACHE_SIZE or sum(kept.nbytes for kept in _CACHE.values()) > limit:
        evicted, _ = _CACHE.popitem(last=False)  # the least recently used
        _evict(evicted)
    return loop


def _evict(key: Hashable) -> None:
    """Start ``key``'s wait: ``REWAIT`` eager calls after its first eviction or a recording that paid for itself
    (replayed ``REPAID`` times or more), twice the last wait after one that did not."""
    replays = _REPLAYS.pop(key, 0)
    wait = 2 * _BACKOFF[key][1] if key in _BACKOFF and replays < REPAID else REWAIT
    _BACKOFF[key] = [wait, wait]
    _BACKOFF.move_to_end(key)
    while len(_BACKOFF) > SEEN_SIZE:
        _BACKOFF.popitem(last=False)


def _waiting(key: Hashable) -> bool:
    """Whether an evicted ``key`` still runs eagerly on this call (counting the call); ``False`` when not evicted."""
    entry = _BACKOFF.get(key)
    if entry is None or entry[0] <= 0:
        return False
    entry[0] -= 1
    return True


def _owned(outputs: Outputs) -> Outputs:
    """Copies of a replay's outputs (the recording's own are overwritten by its next replay)."""
    return {name: None if t is None else t.clone() for name, t in outputs.items()}


def clear() -> None:
    """Drop every recorded loop and the GPU memory it holds."""
    _CACHE.clear()
    _SEEN.clear()
    _UNRECORDABLE.clear()
    _BACKOFF.clear()
    _REPLAYS.clear()
