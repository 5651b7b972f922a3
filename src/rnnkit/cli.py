"""The ``rnnkit`` command line. Heavy modules are imported inside each command."""

from __future__ import annotations

import typer

app = typer.Typer(help="rnnkit: recurrent neural networks for every sequence problem.",
                  no_args_is_help=True, add_completion=False)


@app.command()
def demo(
    cell: str = typer.Option("lstm", help="Recurrent cell: rnn, lstm or gru."),
    epochs: int = typer.Option(15, min=1, help="Training epochs."),
    hidden_size: int = typer.Option(64, min=1, help="Hidden units."),
    seed: int = typer.Option(0, help="Random seed."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the final metrics."),
) -> None:
    """Train a recurrent classifier on the digits dataset shipped with rnnkit (about 10 s)."""
    from .demo import DemoConfig, run_demo

    try:
        metrics = run_demo(DemoConfig(cell=cell, epochs=epochs, hidden_size=hidden_size, seed=seed), quiet=quiet)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if quiet:
        typer.echo(f"test_accuracy={metrics['test_accuracy']:.4f}")


@app.command()
def version() -> None:
    """Print the rnnkit and torch versions."""
    import torch

    from . import __version__

    typer.echo(f"rnnkit {__version__} (torch {torch.__version__})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
