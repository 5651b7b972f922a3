"""rnnkit: recurrent neural networks for every sequence problem, built on PyTorch."""

__version__ = "0.1.0"
