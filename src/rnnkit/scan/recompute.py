"""``recompute_gates``: trade one more matmul per step in backward for the engines' saved activations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_RECOMPUTE: ContextVar[bool] = ContextVar("rnnkit_engine_recompute", default=False)


@contextmanager
def recompute_gates(enabled: bool = True) -> Iterator[None]:
    """Within this block the LSTM, layer-norm LSTM and GRU engines save no gate activations: backward recomputes them.

    The choice is made when the forward runs::

        with rnnkit.scan.recompute_gates():
            loss = model(x).loss
        loss.backward()

    * LSTM engine (``LSTMCell``: plain, peephole, projected; ``implementation="auto"`` picks it
      for peephole, recurrent-dropout, zoneout and gappy-mask LSTMs, and on CPU for projected ones
      at batch > 1 and from 16 steps on; ``"engine"`` forces it): saves the ``[T, B, 4H]`` gate and
      ``[T, B, H]`` ``tanh c`` buffers of every layer and direction (about 40% of an LSTM layer's
      training memory) for one more ``[B, I+H] x [I+H, 4H]`` matmul per step in backward. With a
      projection, ``dL/dW_hr`` is then summed step by step (no ``[T, B, P]`` buffer of ``dL/dh``).
    * GRU engine with torch kernels (GRUs with recurrent dropout, zoneout or gappy masks on CPU):
      keeps the input projection ``[T, B, 3H]`` instead of the gates and ``W_hh h`` (``2 x [T, B, 3H]``),
      for one more ``[B, H] x [H, 3H]`` matmul per step in backward.
    * Layer-norm LSTM engine with torch kernels (``LayerNormLSTMCell``; ``"auto"`` on CPU, and on
      GPUs without triton): keeps ``xw = LN_ih(W_ih x) + b`` ``[T, B, 4H]`` instead of the gates,
      ``W_hh h`` (``2 x [T, B, 4H]``), ``tanh LN_c(c~)`` and the norms' statistics, for one more
      ``[B, H] x [H, 4H]`` matmul per step in backward.

    The Triton kernels always save their activations.
    """
    token = _RECOMPUTE.set(enabled)
    try:
        yield
    finally:
        _RECOMPUTE.reset(token)


def recompute_requested() -> bool:
    """Whether the forward running now is inside :func:`recompute_gates`."""
    return _RECOMPUTE.get()
