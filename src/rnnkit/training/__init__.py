"""The training engine of ``rnnkit.models``: optimizers, losses, callbacks, data handling and the
Lightning-backed ``fit``.

Importing this package does not import Lightning: :mod:`rnnkit.training.engine` does, and
``Model.fit`` imports it when training starts.
"""

from .callbacks import (
    BackupAndRestore,
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TensorBoard,
    TerminateOnNaN,
)
from .data import InputDataError
from .losses import (
    LOSSES,
    BinaryCrossentropy,
    CategoricalCrossentropy,
    Huber,
    Loss,
    MeanAbsoluteError,
    MeanSquaredError,
    SparseCategoricalCrossentropy,
    get_loss,
)
from .optimizers import (
    OPTIMIZERS,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    CosineDecay,
    ExponentialDecay,
    Ftrl,
    InverseTimeDecay,
    LearningRateSchedule,
    Lion,
    Nadam,
    Optimizer,
    PiecewiseConstantDecay,
    RMSprop,
    TorchOptimizer,
    clip_gradients,
    get_optimizer,
)

__all__ = [
    "LOSSES", "OPTIMIZERS", "SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "Adamax", "Ftrl", "Lion", "Nadam", "BackupAndRestore", "BinaryCrossentropy",
    "CSVLogger", "Callback", "CategoricalCrossentropy", "CosineDecay", "EarlyStopping", "ExponentialDecay",
    "History", "Huber", "InputDataError", "InverseTimeDecay", "LambdaCallback", "LearningRateSchedule",
    "LearningRateScheduler", "Loss", "MeanAbsoluteError", "MeanSquaredError", "ModelCheckpoint", "Optimizer",
    "PiecewiseConstantDecay", "RMSprop", "ReduceLROnPlateau", "SparseCategoricalCrossentropy", "TensorBoard",
    "TerminateOnNaN", "TorchOptimizer", "clip_gradients", "get_loss", "get_optimizer",
]
