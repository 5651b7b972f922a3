from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Without a GPU the Triton kernels run in Triton's interpreter. It must be chosen before triton is
# first imported: triton's own library kernels (tl.sum) are set up for the mode in force then.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    """``rnnkit.cli.main`` installs a SIGTERM handler for the process it starts (and ignores signals
    while it exits); a test that calls it must not leave them to the tests after it."""
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, handlers[0])
    signal.signal(signal.SIGINT, handlers[1])


@pytest.fixture
def shared_data() -> Path:
    """The real datasets in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


@pytest.fixture
def same_zoneout_draws(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``use(draws)``: make the reference scan and the LSTM engine take their zoneout keep/zone-out
    decisions from ``draws`` ``[T, 2, B, H]`` (one ``(h, c)`` pair per processed step; a projected
    ``h`` takes its first columns), so the two can be compared in training mode."""
    import rnnkit.scan.engine as engine_module
    import rnnkit.scan.reference as reference_module

    def use(draws: torch.Tensor) -> None:
        step = iter(range(draws.shape[0]))

        def reference_zoneout(new: tuple[torch.Tensor, ...], old: tuple[torch.Tensor, ...], rate: float,
                              training: bool) -> tuple[torch.Tensor, ...]:
            k = next(step)
            return tuple(torch.where(draws[k, j, :, :n.shape[-1]] < rate, o, n)
                         for j, (n, o) in enumerate(zip(new, old)))

        def engine_updates(mask: torch.Tensor | None, zoneout_rate: float, training: bool, steps: int, batch: int,
                           sizes: tuple[int, ...],
                           like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
            keep = None if mask is None else mask.t().unsqueeze(-1).to(like.dtype)
            u = [(draws[:, j, :, :size] >= zoneout_rate).to(like.dtype) for j, size in enumerate(sizes)]
            if keep is not None:
                u = [w * keep for w in u]
            return u[0], u[1] if len(u) == 2 else None, keep

        monkeypatch.setattr(reference_module, "zoneout", reference_zoneout)
        monkeypatch.setattr(engine_module, "_update_weights", engine_updates)

    return use


@pytest.fixture
def scan_mask():  # type: ignore[no-untyped-def]
    """``make(kind, batch, steps, device)``: a ``[batch, steps]`` scan mask. ``"none"`` gives ``None``,
    ``"right"``/``"left"`` pad after/before lengths ``steps, 3, 1, 0`` (then repeated), ``"holes"`` has
    random gaps. The holes are drawn from torch's generator whatever the kind, so a seeded test draws the
    same numbers after it for every kind."""
    def make(kind: str, batch: int, steps: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
        lengths = torch.tensor(([steps, 3, 1, 0] * batch)[:batch])
        ar = torch.arange(steps)
        masks = {"none": None, "right": ar < lengths[:, None], "left": ar >= (steps - lengths)[:, None],
                 "holes": torch.rand(batch, steps) > 0.4}
        mask = masks[kind]
        return None if mask is None else mask.to(device)

    return make


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(int(os.environ.get("RNNKIT_TEST_THREADS", "1")))


@pytest.fixture
def variant_kwargs():  # type: ignore[no-untyped-def]
    """``make(variant, batch, steps, hidden, dtype)``: scan keyword arguments for an engine test variant.

    ``"plain"``/``"recompute"`` (nothing extra), ``"mask"`` (random holes), ``"recurrent_dropout"``
    (a ``[B, H]`` mask scaled by 1/0.7), ``"zoneout_eval"`` (rate 0.2 at inference); always reversed.
    """
    def make(variant: str, batch: int, steps: int, hidden: int, dtype: torch.dtype) -> dict[str, object]:
        kw: dict[str, object] = {"reverse": True}
        if variant == "mask":
            kw["mask"] = torch.rand(batch, steps) > 0.3
        elif variant == "recurrent_dropout":
            kw["recurrent_mask"] = (torch.rand(batch, hidden) > 0.3).to(dtype) / 0.7
        elif variant == "zoneout_eval":
            kw.update(zoneout_rate=0.2, training=False)
        return kw

    return make


@pytest.fixture
def saved_bytes():  # type: ignore[no-untyped-def]
    """``measure(run)``: ``(run(), bytes autograd saved for backward while it ran)``."""
    def measure(run):  # type: ignore[no-untyped-def]
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            result = run()
        return result, total

    return measure


@pytest.fixture
def graph_case_options():  # type: ignore[no-untyped-def]
    """``make(kw, batch, steps, hidden, device)``: scan options for a CUDA-graph replay test case
    (``kw`` flags ``holes``, ``recurrent_dropout``, ``zoneout``; float64 recurrent mask)."""
    def make(kw: dict[str, bool], batch: int, steps: int, hidden: int, device: torch.device) -> dict[str, object]:
        return {"mask": (torch.rand(batch, steps, device=device) > 0.4) if kw.get("holes") else None,
                "recurrent_mask": ((torch.rand(batch, hidden, device=device) > 0.3).double() / 0.7
                                   if kw.get("recurrent_dropout") else None),
                "zoneout_rate": 0.2 if kw.get("zoneout") else 0.0, "training": bool(kw.get("zoneout"))}

    return make


@pytest.fixture
def check_graph_replays(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``check(cell, inputs, run, label)``: on CUDA, three calls (eager, then recorded and replayed,
    then replayed), each on new inputs ``inputs(call)`` and, between calls, new weights changed in
    place as an optimizer step does: ``run(inputs)`` with ``RNNKIT_CUDA_GRAPHS=1`` must equal it
    with ``0`` to 1e-12 (the same zoneout draws in both), and the forward and the backward loop
    must have been recorded once each."""
    from rnnkit.scan import cuda_graph

    def check(cell: torch.nn.Module, inputs: Callable[[int], object], run: Callable[[object], list[torch.Tensor]],
              label: str) -> None:
        cuda_graph.clear()
        for call in range(3):
            case = inputs(call)
            results = []
            for graphs in ("1", "0"):
                monkeypatch.setenv("RNNKIT_CUDA_GRAPHS", graphs)
                torch.manual_seed(10 + call)
                results.append([t.clone() for t in run(case)])
            for g, e in zip(*results):
                torch.testing.assert_close(g, e, rtol=0, atol=1e-12, msg=f"{label}, call {call}")
            with torch.no_grad():
                for p in cell.parameters():
                    p.mul_(0.9).add_(0.01)
        assert len(cuda_graph._CACHE) == 2

    return check
