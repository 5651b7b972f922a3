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


def _fail(err: Exception) -> typer.Exit:
    """Print a one-line error (no traceback) and exit with status 2."""
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(2)


_USER_ERRORS = (ValueError, FileNotFoundError, UnicodeDecodeError, KeyError)


@app.command("tasks")
def list_tasks() -> None:
    """List the tasks with a one-line description each."""
    from .tasks import TASKS

    for name, (_, description) in sorted(TASKS.items()):
        typer.echo(f"{name:22s} {description}")


@app.command()
def train(
    task: str = typer.Argument(..., help="Task name (see 'rnnkit tasks')."),
    train_file: str = typer.Option(None, "--train", help="Training data file, folder or archive."),
    dev_file: str | None = typer.Option(None, "--dev", help="Dev data for model selection (default: hold out part of --train)."),
    config: str | None = typer.Option(None, "--config", help="YAML config file."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set model.cell=gru (repeatable)."),
    out: str = typer.Option("runs", "--out", help="Folder that receives the run folder."),
    name: str | None = typer.Option(None, "--name", help="Run folder name (default: <task>-<n>)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and every option, then exit."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or log lines; print the run folder only."),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
) -> None:
    """Train a task model from raw files; writes a run folder with model, metrics, report and log."""
    import json

    from .tasks import get_task
    from .tasks.config import describe, dump_yaml, load_config

    try:
        module = get_task(task)
        cfg = load_config(module.Config, config, overrides)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    if print_config:
        typer.echo(dump_yaml(cfg))
        typer.echo("# options: key (type, default): help")
        for key, tp, default, help_text in describe(module.Config):
            typer.echo(f"#   {key} ({tp}, {default!r}): {help_text}")
        return
    if train_file is None:
        raise _fail(ValueError("--train FILE is required"))
    from rich.console import Console

    from .tasks.run import RunDir

    console = Console(stderr=True, quiet=quiet or as_json)
    run = RunDir.create(out, task, name)
    run.write_text("config.yaml", dump_yaml(cfg))
    log_lines: list[str] = []

    def log(message: str) -> None:
        log_lines.append(message)
        run.write_text("train.log", "\n".join(log_lines) + "\n")
        console.print(message, highlight=False)

    log(f"run folder: {run.path}")
    try:
        metrics = module.train(cfg, train_file, dev_file, run, log, progress=not (quiet or as_json))
    except _USER_ERRORS as err:
        log(f"error: {err}")
        raise _fail(err) from None
    if as_json:
        typer.echo(json.dumps({"run": str(run.path), **metrics}, indent=2))
        return
    if quiet:
        typer.echo(str(run.path))
        return
    _summary(console, run.path, metrics)


def _summary(console: object, run_path: object, metrics: dict) -> None:
    from rich.table import Table

    table = Table(title=f"run {run_path}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for split in ("dev", "test"):
        for key, value in metrics.get(split, {}).items():
            if isinstance(value, float):
                table.add_row(f"{split} {key}", f"{value:.4f}")
    for key in ("train_seconds", "parameters", "best_epoch"):
        if key in metrics:
            value = metrics[key]
            table.add_row(key, f"{value:.1f}" if isinstance(value, float) else str(value))
    console.print(table)  # type: ignore[attr-defined]


@app.command()
def evaluate(
    run: str = typer.Argument(..., help="Run folder written by 'rnnkit train'."),
    data: str = typer.Option(..., "--data", help="Labelled data in the training format."),
    overrides: list[str] = typer.Option([], "--set", help="Change how --data is read: --set data.member_prefix=aclImdb/test"),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Evaluate a trained run on labelled data (needs nothing but the run folder)."""
    import json

    from .tasks import load_trained

    try:
        metrics = load_trained(run).evaluate(data, overrides)  # type: ignore[attr-defined]
    except _USER_ERRORS as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    for key, value in metrics.items():
        if isinstance(value, float | int):
            typer.echo(f"{key:12s} {value:.4f}" if isinstance(value, float) else f"{key:12s} {value}")


@app.command()
def predict(
    run: str = typer.Argument(..., help="Run folder written by 'rnnkit train'."),
    inputs: list[str] = typer.Argument(None, help="Inputs (texts) to predict."),
    file: str | None = typer.Option(None, "--file", help="Predict every line (or record) of this file."),
    explain: bool = typer.Option(False, "--explain", help="Show which tokens carried each decision."),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON lines."),
) -> None:
    """Predict with a trained run: label and probabilities per input."""
    import json
    from pathlib import Path

    from .tasks import load_trained

    try:
        model = load_trained(run)
        texts = list(inputs or [])
        if file is not None:
            path = Path(file)
            if not path.is_file():
                raise FileNotFoundError(f"input file not found: {path}")
            texts += [line.rstrip("\n") for line in path.read_text(encoding="utf-8").splitlines()]
        if not texts:
            raise ValueError("nothing to predict: give inputs as arguments or --file FILE")
        if explain and not hasattr(model, "explain"):
            raise ValueError("--explain is available for text-classification runs")
        results = [model.explain(t) for t in texts] if explain else model.predict(texts)  # type: ignore[attr-defined]
    except _USER_ERRORS as err:
        raise _fail(err) from None
    for result in results:
        if as_json:
            typer.echo(json.dumps(result))
            continue
        if "probabilities" in result:
            probs = result["probabilities"]
            typer.echo(f"{result['label']}\t{max(probs.values()):.3f}\t{str(result.get('text', ''))[:80]}")
        elif "tags" in result:
            typer.echo(" ".join(f"{tok}/{tag}" for tok, tag in zip(result["tokens"], result["tags"])))
            for entity in result.get("entities", []):
                typer.echo(f"  {entity['type']}\t{entity['text']}")
        else:
            typer.echo(json.dumps(result))
        if explain:
            top = ", ".join(f"{tok} ({w:.2f})" for tok, w in result.get("top_tokens", result.get("weights", []))[:8])
            typer.echo(f"  {result['method']}: {top}")


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
