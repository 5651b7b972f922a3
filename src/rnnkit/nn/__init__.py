"""Recurrent layers in ``torch.nn`` style (time-first by default, like ``torch.nn``)."""

from .factory import recurrent_layer
from .pooling import AttentionPooling, masked_max, masked_mean
from .recurrent import GRU, LSTM, RNN, Recurrent, layer_param_name
from .wrappers import Bidirectional, Hierarchical, Stack, last_state_pooling

__all__ = ["GRU", "LSTM", "RNN", "AttentionPooling", "Bidirectional", "Hierarchical", "Recurrent", "Stack",
           "last_state_pooling", "layer_param_name", "masked_max", "masked_mean", "recurrent_layer"]
