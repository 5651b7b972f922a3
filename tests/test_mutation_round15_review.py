"""Mutation testing, round 15: the Keras-style optimizers added to ``training.optimizers`` (Nadam,
Adamax, Adadelta, Lion, Ftrl), ``exclude_from_weight_decay`` and the Keras weight names,
``gradient_accumulation_steps`` (the update/call counts, the accumulators), ``loss_scale_factor``,
``match_parameter_dtypes`` and the call count ``apply_gradients`` returns.

Each test here kills a plausible bug (Nadam's ``u_product`` read as 0 before its first update, a
``learning_rate_power=0`` that Keras takes refused, a stale weight-decay exclusion cache after the
trainable set or the weight names change, a parameter without a gradient decayed, an EMA that does not
restart when ``iterations`` is set back to 0, an accumulator that aliases a reused gradient buffer ...)
that the rest of the suite let through. The expected values come from independent references: Keras 3
(``KERAS_BACKEND=torch``) on copied weights, ``torch.optim`` and plain arithmetic of the documented
update (``w * (1 - lr * weight_decay)`` under a zero gradient), never from the code path under test.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from models.keras_reference import keras_module, needs_keras  # tests/ is on sys.path (rootdir conftest)
from models.test_keras_optimizers_parity import keras_optimizer, steps_keras, weights_and_grads
from models.test_optimizer_keras_args_review import _apply_ours, _close
from rnnkit.training import optimizers as O


def _zero_step(optimizer: O.Optimizer, params: list[nn.Parameter]) -> None:
    """One ``apply`` with zero gradients: with SGD only the decoupled weight decay moves the weights."""
    optimizer.apply([torch.zeros_like(p) for p in params], params)


# -- Nadam, Adamax, Ftrl ----------------------------------------------------------------------------
@needs_keras
def test_nadam_u_product_reads_one_until_the_first_update_as_keras() -> None:
    """Keras creates ``u_product`` at 1.0 when it builds; during the first accumulation window (no
    update yet, so no torch ``mu_product``) the variable still reads 1, and after the update the
    product of Keras's."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=2, seed=2)
    kwargs = {"learning_rate": 0.01, "gradient_accumulation_steps": 2}
    ours, theirs = O.Nadam(**kwargs), keras.optimizers.Nadam(**kwargs)
    params = [nn.Parameter(torch.tensor(w)) for w in w0]
    variables = [keras.Variable(w.copy()) for w in w0]
    for gs in grads:
        ours.apply_gradients(zip(gs, params))
        theirs.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
        k_product = theirs.variables[-1]  # (Keras's u_product, an unnamed scalar, comes last)
        r_product = ours.variables[-1]
        assert r_product.name == "u_product"
        assert float(r_product.numpy()) == pytest.approx(float(np.asarray(k_product.numpy())), rel=1e-6)


def test_adamax_state_counts_steps_as_torch_adamax() -> None:
    """Adamax keeps torch's state entries (its docstring): ``step`` counts the steps taken as
    ``torch.optim.Adamax``'s does, so a saved state reads the same either way."""
    w0, grads = weights_and_grads(1.0, steps=3, seed=1)
    ours = O.Adamax(0.01)
    params = [nn.Parameter(torch.tensor(w)) for w in w0]
    for gs in grads:
        ours.apply_gradients(zip(gs, params))
    twins = [nn.Parameter(torch.tensor(w)) for w in w0]
    reference = torch.optim.Adamax(twins, lr=0.01)
    for gs in grads:
        for p, g in zip(twins, gs):
            p.grad = torch.tensor(g)
        reference.step()
    assert ours.torch_optimizer is not None
    for p, q in zip(params, twins):
        assert float(ours.torch_optimizer.state[p]["step"]) == float(reference.state[q]["step"]) == 3.0


@needs_keras
def test_ftrl_takes_learning_rate_power_zero_as_keras() -> None:
    """Keras's ``learning_rate_power`` must be <= 0, so 0 (a fixed per-weight rate) is valid; the
    updates are Keras's."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=5, seed=3)
    kwargs = {"learning_rate": 0.1, "learning_rate_power": 0.0, "l1_regularization_strength": 0.01}
    _close(_apply_ours(O.Ftrl(**kwargs), w0, grads), steps_keras(keras_optimizer(keras, "Ftrl", kwargs), keras, w0, grads))


# -- exclude_from_weight_decay and the Keras weight names -------------------------------------------
def _tied() -> nn.Sequential:
    """An embedding whose table is also the output layer's weight (tied), as language models do."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5))
    model[1].weight = model[0].weight
    return model


def test_a_tied_table_keeps_its_embedding_name_and_a_renaming_reaches_the_exclusions() -> None:
    """A Keras variable is named by the layer that made it: the tied table is ``embeddings`` (not the
    ``kernel`` of the layer that reuses it). Naming the weights again with another module (first the
    output layer alone, then the whole model) changes which ones ``var_names`` exempts from the
    next step on: ``w * (1 - lr * wd)`` under zero gradients for the decayed, unchanged for the others."""
    model = _tied()
    table, bias = model[0].weight, model[1].bias
    assert O.keras_weight_names(model)[id(table)] == "embeddings"
    opt = O.SGD(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["embeddings"])
    params = [table, bias]
    opt.build(params)
    opt.name_weights(model[1])  # the output layer alone: the table is its ``kernel``
    t0, b0 = table.detach().clone(), bias.detach().clone()
    _zero_step(opt, params)
    torch.testing.assert_close(table.detach(), t0 * 0.95)
    torch.testing.assert_close(bias.detach(), b0 * 0.95)
    opt.name_weights(model)  # the whole model: the table is ``embeddings``, exempt
    _zero_step(opt, params)
    torch.testing.assert_close(table.detach(), t0 * 0.95)
    torch.testing.assert_close(bias.detach(), b0 * 0.95 * 0.95)


def test_exclusions_follow_a_rebuilt_trainable_set() -> None:
    """A layer frozen for the first step and trainable for the second: after the rebuild its ``bias``
    is exempt from weight decay by name as the other layer's is; its ``kernel`` decays."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    opt = O.SGD(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    model[0].requires_grad_(False)
    opt.build(model.parameters())
    opt.name_weights(model)
    _zero_step(opt, list(model[1].parameters()))
    model[0].requires_grad_(True)
    opt.build(model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    _zero_step(opt, list(model.parameters()))
    for (name, p), b in zip(model.named_parameters(), before):
        torch.testing.assert_close(p.detach(), b if name.endswith("bias") else b * 0.95, msg=name)


def test_torch_recurrent_layers_have_one_keras_bias() -> None:
    """Keras's LSTM/GRU have one ``bias`` where torch has ``bias_ih`` and ``bias_hh``: ``var_names=["bias"]``
    exempts both, as it exempts Keras's single bias; the kernels decay."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.LSTM(2, 3))
    names = O.keras_weight_names(model)
    assert sorted(names[id(p)] for p in model.parameters()) == ["bias", "bias", "kernel", "recurrent_kernel"]
    opt = O.SGD(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["bias"])
    params = list(model.parameters())
    opt.build(params)
    opt.name_weights(model)
    before = [p.detach().clone() for p in params]
    _zero_step(opt, params)
    for (name, p), b in zip(model.named_parameters(), before):
        torch.testing.assert_close(p.detach(), b if name.startswith("0.bias") else b * 0.95, msg=name)


@needs_keras
@pytest.mark.parametrize("name", ["SGD", "Lion"])
def test_a_variable_without_gradient_is_not_decayed_as_keras(name: str) -> None:
    """Keras drops the variables whose gradient is ``None`` before its weight decay: they stay put."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=3, seed=5)
    kwargs: dict[str, Any] = {"learning_rate": 0.05, "weight_decay": 0.5}
    ours, theirs = getattr(O, name)(**kwargs), keras_optimizer(keras, name, kwargs)
    params = [nn.Parameter(torch.tensor(w)) for w in w0]
    variables = [keras.Variable(w.copy()) for w in w0]
    with pytest.warns(UserWarning):  # (Keras warns about the missing gradient)
        for gs in grads:
            ours.apply_gradients([(gs[0], params[0]), (None, params[1])])
            theirs.apply_gradients([(torch.tensor(gs[0]), variables[0]), (None, variables[1])])
    for p, v in zip(params, variables):
        np.testing.assert_allclose(p.detach().numpy(), np.asarray(v.numpy()), rtol=2e-6, atol=5e-7)
    np.testing.assert_array_equal(params[1].detach().numpy(), w0[1])


# -- the counts and the EMA -------------------------------------------------------------------------
@needs_keras
def test_assigning_the_returned_call_count_sets_calls_as_keras() -> None:
    """``apply_gradients`` returns Keras's ``iteration`` variable: ``assign(n)`` on it sets the call
    count to ``n`` (``iterations`` then reads ``n // N``), not the update count."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=3, seed=7)
    kwargs = {"learning_rate": 0.1, "gradient_accumulation_steps": 3}
    ours, theirs = O.SGD(**kwargs), keras.optimizers.SGD(**kwargs)
    params = [nn.Parameter(torch.tensor(w)) for w in w0]
    variables = [keras.Variable(w.copy()) for w in w0]
    r_count = ours.apply_gradients(zip(grads[0], params))
    k_count = theirs.apply_gradients([(torch.tensor(g), v) for g, v in zip(grads[0], variables)])
    r_count.assign(4)
    k_count.assign(4)
    assert int(ours.variables[0].numpy()) == int(np.asarray(theirs.variables[0].numpy())) == 4
    assert ours.iterations == int(theirs.iterations) == 1
    for gs in grads[1:]:  # call 4 ends the window of calls 3-5: an update with the mean of 2 + the first
        ours.apply_gradients(zip(gs, params))
        theirs.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
    for p, v in zip(params, variables):
        np.testing.assert_allclose(p.detach().numpy(), np.asarray(v.numpy()), rtol=2e-6, atol=5e-7)


@needs_keras
def test_ema_restarts_at_the_weights_when_iterations_are_set_back_to_zero_as_keras() -> None:
    """Keras's average takes momentum 0 whenever ``iterations`` is 0: set back to 0 after two
    steps, the next step's average is that step's weights (then averaging resumes)."""
    keras = keras_module()
    w0, grads = weights_and_grads(1.0, steps=4, seed=8)
    kwargs = {"learning_rate": 0.1, "use_ema": True, "ema_momentum": 0.5}
    ours, theirs = O.SGD(**kwargs), keras.optimizers.SGD(**kwargs)
    params = [nn.Parameter(torch.tensor(w)) for w in w0]
    variables = [keras.Variable(w.copy()) for w in w0]
    for call, gs in enumerate(grads):
        if call == 2:
            ours.iterations.assign(0)
            theirs.iterations.assign(0)
        ours.apply_gradients(zip(gs, params))
        theirs.apply_gradients([(torch.tensor(g), v) for g, v in zip(gs, variables)])
        r_avg = [v.numpy() for v in ours.variables if v.name.endswith("_average")]
        k_avg = [np.asarray(a.numpy()) for a in theirs._model_variables_moving_average]
        assert len(r_avg) == len(k_avg) == 2
        for a, b in zip(r_avg, k_avg):
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=5e-7, err_msg=f"after call {call}")


# -- gradient accumulation --------------------------------------------------------------------------
def test_accumulator_keeps_its_own_copy_of_a_reused_gradient_buffer() -> None:
    """Gradients that are views of one reused buffer (as DDP's ``gradient_as_bucket_view`` gives), in
    the custom loop ``clip`` / ``before_step`` / torch ``step``: the first call's gradient is held in
    the accumulator while the buffer is overwritten by the second's; the update uses their mean,
    ``w - lr * (g1 + g2) / 2``."""
    torch.manual_seed(3)
    w = nn.Parameter(torch.randn(4))
    w0 = w.detach().clone()
    g1, g2 = torch.randn(4), torch.randn(4)
    opt = O.SGD(0.1, gradient_accumulation_steps=2)
    torch_opt = opt.build([w])
    bucket = torch.zeros(6)
    for g in (g1, g2):
        bucket[1:5].copy_(g)
        w.grad = bucket[1:5]
        opt.clip([w])
        opt.before_step()
        torch_opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * (g1 + g2) / 2)


def test_loss_scaled_gradients_written_in_place_are_unscaled_every_step() -> None:
    """``loss_scale_factor`` in the custom loop ``clip`` / ``before_step`` / torch ``step`` with the
    ``.grad`` tensors kept between steps (``zero_grad(set_to_none=False)``, then a backward that writes
    into them): each step's gradient is divided by the factor once, ``w - lr * (g1 + g2)``."""
    torch.manual_seed(4)
    w = nn.Parameter(torch.randn(4))
    w0 = w.detach().clone()
    g1, g2 = torch.randn(4), torch.randn(4)
    opt = O.SGD(0.1, loss_scale_factor=8.0)
    torch_opt = opt.build([w])
    w.grad = torch.zeros(4)
    for g in (g1, g2):
        torch_opt.zero_grad(set_to_none=False)
        w.grad.add_(8.0 * g)  # (what backward of the scaled loss adds into the kept tensor)
        opt.clip([w])
        opt.before_step()
        torch_opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * (g1 + g2))


# -- match_parameter_dtypes -------------------------------------------------------------------------
def test_step_count_of_a_scalar_parameter_stays_float32_when_the_model_turns_bfloat16() -> None:
    """A 0-d parameter (a learned temperature) has the shape of torch's ``step``: after the model turns
    bfloat16 (a ``bf16-true`` fit) its moments follow it but ``step`` stays float32, as torch's
    ``load_state_dict`` keeps it (bfloat16 would count 257 steps as 256)."""
    torch.manual_seed(5)
    params = [nn.Parameter(torch.randn(3)), nn.Parameter(torch.tensor(0.5))]
    opt = O.Adam(0.01)
    for _ in range(2):
        opt.apply([torch.randn(3), torch.tensor(0.3)], params)
    with torch.no_grad():
        for p in params:
            p.data = p.data.to(torch.bfloat16)
    reference = torch.optim.Adam([p.detach().clone() for p in params])
    reference.load_state_dict(opt.torch_optimizer.state_dict())  # type: ignore[union-attr]
    opt.build(params)
    opt.apply([torch.randn(3), torch.tensor(0.3)], params)
    assert opt.torch_optimizer is not None
    for p, q in zip(params, reference.param_groups[0]["params"]):
        state = opt.torch_optimizer.state[p]
        assert state["step"].dtype == reference.state[q]["step"].dtype == torch.float32
        assert float(state["step"]) == 3.0
        assert state["exp_avg"].dtype == reference.state[q]["exp_avg"].dtype == torch.bfloat16
