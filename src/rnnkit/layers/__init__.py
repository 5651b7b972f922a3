"""Keras-style layers on top of :mod:`rnnkit.nn` (batch-first, sizes inferred from the first batch).

Code written for ``keras.layers`` runs with only the import changed::

    from rnnkit.layers import Embedding, LSTM, Dense
    from rnnkit.layers import Conv1D, MaxPooling1D, BatchNormalization

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
from .convolutional import Conv1D
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
    Reshape,
    SpatialDropout1D,
)
from .initializers import INITIALIZERS, get_initializer
from .keras_weights import keras_to_torch, torch_to_keras
from .normalization import BatchNormalization, LayerNormalization
from .pooling import (
    AttentionPooling,
    AveragePooling1D,
    GlobalAveragePooling1D,
    GlobalMaxPooling1D,
    MaxPooling1D,
)
from .recurrent import GRU, LSTM, KerasGRUCell, KerasLSTMCell, KerasSimpleRNNCell, SimpleRNN
from .wrappers import Bidirectional, TimeDistributed

__all__ = [
    "ACTIVATIONS", "GRU", "INITIALIZERS", "LAYERS", "LSTM", "Activation", "Add", "AttentionPooling", "Average",
    "AveragePooling1D", "BatchNormalization", "Bidirectional", "Concatenate", "Conv1D", "Dense", "Dropout",
    "Embedding", "Flatten", "GlobalAveragePooling1D", "GlobalMaxPooling1D", "Input", "InputLayer", "KerasGRUCell",
    "KerasLSTMCell", "KerasSimpleRNNCell", "Layer", "LayerNormalization", "Masking", "MaxPooling1D", "Multiply",
    "Node", "RepeatVector", "Reshape", "SimpleRNN", "SpatialDropout1D", "SymbolicTensor", "TimeDistributed",
    "deserialize_layer", "get_activation", "get_initializer", "keras_to_torch", "register_activation",
    "register_layer", "serialize_layer", "torch_to_keras",
]
