"""Fused optimizer steps (rnnkit.training.optimizers.make_torch_optimizer): where they are used, that they
match torch's default step, and the fall-back where torch refuses them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rnnkit.tasks.engine import make_optimizer
from rnnkit.training import optimizers as opt
from rnnkit.training.optimizers import fused_step_kwargs, make_torch_optimizer


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(50, 8), nn.LSTM(8, 16, batch_first=True))


def _train(optimizer_factory, steps: int = 6) -> list[torch.Tensor]:
    model = _model()
    optimizer = optimizer_factory(model.parameters())
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, 50, (4, 7), generator=gen)
        out, _ = model[1](model[0](ids))
        loss = out.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("cls,kwargs", [
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.Adam, {"lr": 1e-2, "weight_decay": 1e-3, "amsgrad": True}),
    (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.01}),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}),
])
def test_fused_steps_match_the_default_step(cls, kwargs):
    fused = _train(lambda ps: make_torch_optimizer(cls, ps, **kwargs))
    plain = _train(lambda ps: cls(ps, **kwargs))
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    made = make_torch_optimizer(cls, _model().parameters(), **kwargs)
    assert made.defaults.get("fused") is True


def test_which_optimizers_and_parameters_get_the_fused_step():
    floats = list(_model().parameters())
    assert fused_step_kwargs(torch.optim.Adam, floats) == {"fused": True}
    assert fused_step_kwargs(torch.optim.Adam, [{"params": floats}]) == {"fused": True}  # param groups
    assert fused_step_kwargs(torch.optim.RMSprop, floats) == {}  # no fused step in torch
    assert fused_step_kwargs(torch.optim.Adam, []) == {}
    meta = [nn.Parameter(torch.empty(3, device="meta"))]
    assert fused_step_kwargs(torch.optim.Adam, meta) == {}  # not a CPU or CUDA tensor
    assert make_optimizer("adam", _model().parameters(), 1e-3, 0.0).defaults.get("fused") is True
    assert make_optimizer("rmsprop", _model().parameters(), 1e-3, 0.0).defaults.get("fused") in (None, False)


def test_a_torch_that_refuses_the_fused_step_gets_the_default_one(monkeypatch):
    class NoFused(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            if kwargs.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                                   "supported devices")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(opt, "_FUSED_CLASSES", (*opt._FUSED_CLASSES, NoFused))
    made = make_torch_optimizer(NoFused, _model().parameters(), lr=1e-3)
    assert not made.defaults.get("fused")
    assert len(made.param_groups[0]["params"]) == len(list(_model().parameters()))  # the list was not consumed


def test_keras_style_optimizers_build_the_fused_step():
    model = _model()
    assert opt.Adam().build(model.parameters()).defaults.get("fused") is True
    assert opt.AdamW().build(model.parameters()).defaults.get("fused") is True
    assert opt.SGD(momentum=0.9).build(model.parameters()).defaults.get("fused") is True
    assert not opt.RMSprop().build(model.parameters()).defaults.get("fused")


def test_a_fused_optimizers_state_round_trips():
    model = _model()
    first = make_torch_optimizer(torch.optim.Adam, model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    first.step()
    second = make_torch_optimizer(torch.optim.Adam, model.parameters(), lr=1e-2)
    second.load_state_dict(first.state_dict())  # as resuming a checkpoint does
    for p in model.parameters():
        torch.testing.assert_close(second.state[p]["exp_avg"], first.state[p]["exp_avg"])
    second.step()
