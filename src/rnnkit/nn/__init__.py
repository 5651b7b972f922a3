"""Recurrent layers in ``torch.nn`` style (time-first by default, like ``torch.nn``)."""

from .recurrent import GRU, LSTM, RNN, Recurrent, layer_param_name
from .wrappers import Bidirectional, Hierarchical, Stack, last_state_pooling

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Hierarchical", "Recurrent", "Stack", "last_state_pooling",
           "layer_param_name"]
