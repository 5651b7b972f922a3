"""Keras-style models: ``Sequential``, functional ``Model``, save/load.

Keras code runs with only the imports changed::

    from rnnkit.models import Sequential
    from rnnkit.layers import Embedding, LSTM, Dense

Importing this package does not import Lightning; ``fit`` does when training starts.
"""

from ..layers.core import Input
from .model import Model, Sequential, clone_model, model_from_json
from .saving import load_model
from .utils import set_random_seed, to_categorical

__all__ = ["Input", "Model", "Sequential", "clone_model", "load_model", "model_from_json", "set_random_seed", "to_categorical"]
