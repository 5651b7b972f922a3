"""What inference keeps from the weights (rnnkit.scan.weight_cache) never goes stale and never gets in the way."""

from __future__ import annotations

import copy
import io
import threading

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.scan import step_matmul, weight_cache

BACKENDS = ["torch"] + (["onednn"] if step_matmul._ONEDNN else [])
VARIANTS = [pytest.param(rnn.LSTM, {"cell": "peephole_lstm"}, id="peephole-lstm"),
            pytest.param(rnn.LSTM, {"zoneout": 0.1}, id="lstm-zoneout"),
            pytest.param(rnn.GRU, {"zoneout": 0.1}, id="gru-zoneout")]


def _pair(cls: type, kw: dict[str, object], hidden: int = 16) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    layer = cls(3, hidden, batch_first=True, **kw)
    reference = cls(3, hidden, batch_first=True, implementation="reference", **kw)
    return layer, reference


def _eval_gap(layer: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor) -> float:
    reference.load_state_dict(layer.state_dict())
    reference.eval()
    with torch.no_grad():
        return (layer(x)[0] - reference(x)[0]).abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cls", "kw"), VARIANTS)
def test_fused_optimizer_steps_reach_inference_without_a_mode_switch(cls, kw, backend: str) -> None:
    """Adam(fused=True) leaves the version counter alone; the sampled values still see its updates."""
    layer, reference = _pair(cls, kw)
    layer.eval()  # never switched: only the cache's own check can notice the steps
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2, fused=True)
    x = torch.randn(4, 9, 3)  # T >= 8: "auto" runs the engines
    with step_matmul.step_matmul_backend(backend):
        _train_and_compare(layer, reference, optimizer, x)


def _train_and_compare(layer: torch.nn.Module, reference: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       x: torch.Tensor) -> None:
    for _ in range(3):
        with torch.no_grad():
            layer(x)  # fills the cache
        versions = [p._version for p in layer.parameters()]
        optimizer.zero_grad()
        layer(x)[0].pow(2).mean().backward()
        optimizer.step()
        assert _eval_gap(layer, reference, x) < 1e-6
    assert versions == [p._version for p in layer.parameters()]  # the case the version counter misses


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cls", "kw"), VARIANTS)
def test_edits_through_data_reach_inference(cls, kw, backend: str) -> None:
    layer, reference = _pair(cls, kw, hidden=32)
    layer.eval()
    x = torch.randn(4, 9, 3)
    with step_matmul.step_matmul_backend(backend):
        with torch.no_grad():
            layer(x)
            for p in layer.parameters():
                p.data.mul_(1.5)  # a separate version counter: invisible to it
        assert _eval_gap(layer, reference, x) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cls", "kw"), VARIANTS)
def test_one_columns_edit_through_data_reaches_inference(cls, kw, backend: str) -> None:
    """Zeroing one input feature's or hidden unit's weights through ``.data`` (an ablation) in eval mode.

    ``layer.eval()`` before the prediction no longer clears the kept values (no switch), so the
    samples alone must see the edit: at H=256 a sampling stride of a whole row (``[4H, I]`` with
    I=128, ``[4H, H]``: 128 and 256) read column 0 only, and a stride of 192 for the GRU's
    ``[3H, H]`` read 4 of its 256 columns.
    """
    torch.manual_seed(0)
    layer = cls(128, 256, batch_first=True, **kw).eval()
    reference = cls(128, 256, batch_first=True, implementation="reference", **kw)
    x = torch.randn(4, 9, 128)
    with step_matmul.step_matmul_backend(backend):
        with torch.no_grad():
            layer(x)  # fills the cache
            for p in layer.parameters():
                if p.dim() == 2:
                    p.data[:, 1] = 0.0  # a separate version counter: invisible to it
        layer.eval()  # model.eval() before every prediction: no switch, nothing forgotten
        assert _eval_gap(layer, reference, x) < 1e-6


def test_a_switch_between_train_and_eval_forgets_the_cells_values() -> None:
    layer = rnn.LSTM(3, 8, cell="peephole_lstm").eval()
    with torch.no_grad():
        layer(torch.randn(9, 2, 3))
    cell = layer.cell(0)
    assert weight_cache.kept(cell)
    layer.eval()  # no switch (model.eval() before every prediction): kept
    assert weight_cache.kept(cell)
    layer.train()
    assert not weight_cache.kept(cell)


@pytest.mark.skipif(not step_matmul._ONEDNN, reason="oneDNN's packed linear is not available on this CPU")
def test_layers_copy_and_save_after_inference_on_onednn() -> None:
    """A packed oneDNN weight has no storage: kept beside the cell, it cannot break deepcopy or torch.save."""
    layer = rnn.LSTM(16, 32, cell="peephole_lstm", batch_first=True).eval()
    x = torch.randn(2, 9, 16)
    with step_matmul.step_matmul_backend("onednn"), torch.no_grad():
        expected = layer(x)[0]
        copied = copy.deepcopy(layer)
        buffer = io.BytesIO()
        torch.save(layer.state_dict(), buffer)
        torch.save(layer, io.BytesIO())
        torch.testing.assert_close(copied(x)[0], expected, rtol=0, atol=1e-6)
    assert not any(name.startswith("_rnnkit") for name in vars(layer.cell(0)))


def test_data_parallel_replicas_do_not_share_cells() -> None:
    """nn.DataParallel copies __dict__ shallowly; replicas running in parallel threads must not re-point each other's cells."""
    torch.manual_seed(0)
    layer = rnn.LSTM(3, 8, cell="peephole_lstm", batch_first=True)
    replica = layer._replicate_for_data_parallel()
    for name, p in layer.named_parameters():
        replica._parameters[name] = p.detach() * 2.0  # what replicate() assigns: tensors of the replica's own
    assert all(a is not b for a, b in zip(layer._cells, replica._cells, strict=True))
    x = torch.randn(2, 9, 3)
    with torch.no_grad():
        expected = {id(layer): layer(x)[0], id(replica): replica(x)[0]}
    wrong: list[int] = []

    def run(module: torch.nn.Module) -> None:
        for _ in range(30):
            with torch.no_grad():
                if not torch.equal(module(x)[0], expected[id(module)]):
                    wrong.append(1)

    threads = [threading.Thread(target=run, args=(m,)) for m in (layer, replica)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_a_cells_values_go_with_the_cell() -> None:
    """Kept values are keyed by the cell's identity and dropped when it is collected (no stale ids, no leak)."""
    import gc

    from rnnkit.cells import LSTMCell
    from rnnkit.scan import engine_scan, reference_scan

    cell = LSTMCell(3, 8, peephole=True)
    x = torch.randn(2, 5, 3)
    state = (torch.zeros(2, 8), torch.zeros(2, 8))
    with torch.no_grad():
        torch.testing.assert_close(engine_scan(cell, x, state)[0], reference_scan(cell, x, state)[0])
    assert weight_cache.kept(cell)
    weight_cache.forget(cell)
    with torch.no_grad():
        engine_scan(cell, x, state)  # kept again: one finalizer per cell, however often it is forgotten
    owner = id(cell)
    del cell
    gc.collect()
    assert owner not in weight_cache._STORE and owner not in weight_cache._WATCHED


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
def test_a_kept_value_is_rebuilt_after_an_edit_through_data(layout: str) -> None:
    """The sampled positions are read at each call, whatever the source's layout (a slice whose rows
    have gaps flattens only by copying: it is resampled each call instead of read through a view)."""
    class Owner:
        pass

    owner = Owner()
    base = torch.randn(64, 48)
    source = {"contiguous": base, "transposed": base.t(), "strided": base[:, :30]}[layout]  # rows with gaps
    param = torch.nn.Parameter(source.detach().clone()) if layout == "contiguous" else None
    tensor = param if param is not None else source
    builds = []

    def build() -> float:
        builds.append(1)
        return float(tensor.detach().sum())

    first = weight_cache.cached(owner, "sum", (tensor, None), build)
    assert weight_cache.cached(owner, "sum", (tensor, None), build) == first and len(builds) == 1
    (tensor.data if param is not None else tensor).mul_(2.0)  # through .data: the version counter is not bumped
    if param is None:  # a plain tensor's counter moves with the edit: undo that part of the key to test the samples
        weight_cache._STORE[id(owner)]["sum"] = (
            (tuple(weight_cache._identity(s) for s in (tensor, None)), None), *weight_cache._STORE[id(owner)]["sum"][1:])
    assert weight_cache.cached(owner, "sum", (tensor, None), build) == pytest.approx(2 * first)
    assert len(builds) == 2


def test_sources_made_under_inference_mode_are_kept_and_edits_seen() -> None:
    """A tensor made under ``torch.inference_mode()`` has no version counter (reading it raises):
    such sources (a kept value built there, weights loaded there) are told apart by their samples."""
    class Owner:
        pass

    owner = Owner()
    with torch.inference_mode():
        source = torch.randn(8, 16)
    builds = []

    def build() -> float:
        builds.append(1)
        return float(source.sum())

    first = weight_cache.cached(owner, "sum", (source,), build)
    assert weight_cache.cached(owner, "sum", (source,), build) == first and len(builds) == 1
    with torch.inference_mode():
        source.mul_(2.0)
        assert weight_cache.cached(owner, "sum", (source,), build) == pytest.approx(2 * first)
    assert len(builds) == 2


@pytest.mark.parametrize("kw", [{"proj_size": 2}, {"proj_size": 2, "zoneout": 0.1}, {"cell": "peephole_lstm"}])
def test_a_layer_first_run_under_inference_mode_then_trains_and_follows_its_weights(kw: dict[str, object]) -> None:
    from rnnkit.scan import engine

    engine._gate_order.cache_clear()  # the gate order is made by the first call: under inference mode here
    layer = rnn.LSTM(3, 5, batch_first=True, **kw)  # type: ignore[arg-type]  # proj_size: the engine at T >= 16
    reference = rnn.LSTM(3, 5, batch_first=True, implementation="reference", **kw)  # type: ignore[arg-type]
    x = torch.randn(4, 20, 3)
    for _ in range(2):
        layer.eval()
        reference.load_state_dict(layer.state_dict())
        with torch.inference_mode():
            got, _ = layer(x)
        with torch.no_grad():
            torch.testing.assert_close(got, reference.eval()(x)[0])
            torch.testing.assert_close(layer(x)[0], got)
        layer.train()
        out, _ = layer(x)
        out.sum().backward()
        with torch.no_grad():
            for p in layer.parameters():
                p.data.sub_(0.1 * p.grad)  # through .data: only the sampled values show the step
            layer.zero_grad()
