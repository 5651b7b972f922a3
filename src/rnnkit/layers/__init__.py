"""Keras-style layers on top of :mod:`rnnkit.nn` (batch-first, sizes inferred from the first batch).

Code written for ``keras.layers`` runs with only the import changed::

    from rnnkit.layers import Embedding, LSTM, Dense

Every layer is a ``torch.nn.Module``; see :mod:`rnnkit.layers.base` for the protocol (lazy
build, masks beside tensors, ``get_config``/``from_config``, symbolic calls for functional models).
"""

from .activations import ACTIVATIONS, get_activation, register_activation
from .base import (
    LAYERS,
    Layer,
    Node,
    SymbolicTensor,
    deserialize_layer,
    register_layer,
    serialize_layer,
)
from .core import (
    Activation,
    Add,
    Average,
    Concatenate,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    Input,
    InputLayer,
    Masking,
    Multiply,
    RepeatVector,
)
from .initializers import INITIALIZERS, get_initializer
from .keras_weights import keras_to_torch, torch_to_keras
from .pooling import AttentionPooling, GlobalAveragePooling1D, GlobalMaxPooling1D
from .recurrent import GRU, LSTM, KerasGRUCell, KerasLSTMCell, KerasSimpleRNNCell, SimpleRNN
from .wrappers import Bidirectional, TimeDistributed

__all__ = [
    "ACTIVATIONS", "GRU", "INITIALIZERS", "LAYERS", "LSTM", "Activation", "Add", "AttentionPooling", "Average",
    "Bidirectional", "Concatenate", "Dense", "Dropout", "Embedding", "Flatten", "GlobalAveragePooling1D",
    "GlobalMaxPooling1D", "Input", "InputLayer", "KerasGRUCell", "KerasLSTMCell", "KerasSimpleRNNCell", "Layer",
    "Masking", "Multiply", "Node", "RepeatVector", "SimpleRNN", "SymbolicTensor", "TimeDistributed",
    "deserialize_layer", "get_activation", "get_initializer", "keras_to_torch", "register_activation",
    "register_layer", "serialize_layer", "torch_to_keras",
]
