"""The ``rnnkit`` command line. Heavy modules are imported inside each command."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand

app = typer.Typer(help="rnnkit: recurrent neural networks for every sequence problem.",
                  epilog="The command keeps freed memory in the process for reuse (faster CPU training steps, "
                         "see docs/speed.md); RNNKIT_REUSE_FREED_MEMORY=0 turns that off.",
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
    """Print a one-line error (no traceback) and exit with status 2 (a closed output pipe: quietly, status 1)."""
    if isinstance(err, BrokenPipeError):
        return typer.Exit(_closed_pipe())
    message = str(err)
    if isinstance(err, OSError) and err.strerror and err.filename is not None:  # "[Errno 21] ..." from the OS
        import errno

        fix = {errno.ENOSPC: "free some space there (or write elsewhere: --out, TMPDIR)",
               errno.EDQUOT: "free some space there (or write elsewhere: --out, TMPDIR)",
               errno.EACCES: "check its permissions", errno.EROFS: "write elsewhere (--out)"}.get(err.errno or 0,
                                                                                               "check the path")
        message = f"{err.filename}: {err.strerror}; {fix}"
    for copy, name in _SHOWN_AS.items():  # a pipe's data is named as given, not as its temporary copy
        message = message.replace(copy, name)
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    return typer.Exit(2)


# Errors that come from what the user gave (values, paths, files), and a training loss that diverged
# (the engine's FloatingPointError names the fix): one line, no traceback.
_USER_ERRORS = (ValueError, OSError, UnicodeDecodeError, KeyError, FloatingPointError)


# Copies of standard input and pipes made by _input_file, and the names they are shown by in messages.
_SHOWN_AS: dict[str, str] = {}


def _input_file(file: str | None) -> Any:
    """``--file`` as a path the readers can open by name: ``-`` (standard input) and pipes
    (``/dev/stdin``, ``<(command)``) are copied into a temporary file first, named ``stdin`` or as the
    pipe, whose lines keep their numbers; other paths, and ``None``, pass through unchanged."""
    import contextlib
    import os
    import shutil
    import stat
    import sys
    import tempfile
    from pathlib import Path

    if file is None or file != "-" and not os.path.exists(file):
        return contextlib.nullcontext(file)  # the readers name a missing file
    if file != "-" and (stat.S_ISREG(os.stat(file).st_mode) or os.path.isdir(file)):
        return contextlib.nullcontext(file)

    @contextlib.contextmanager
    def spooled() -> Any:
        with tempfile.TemporaryDirectory(prefix="rnnkit-input-") as folder:
            copy = Path(folder) / ("stdin" if file == "-" else Path(file).name)
            _SHOWN_AS[str(copy)] = "stdin" if file == "-" else file
            source = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115 (closed below)
            try:
                with open(copy, "wb") as target:
                    shutil.copyfileobj(source, target)
            finally:
                if file != "-":
                    source.close()
            yield str(copy)

    return spooled()


def _config_keys(task: Any) -> Any:
    """Word data errors for the command line (``--set data.KEY=VALUE``) for a task module or a trained
    model of one (see :func:`rnnkit.data.errors.config_keys`)."""
    import sys
    from types import ModuleType

    from .data.errors import config_keys

    module = task if isinstance(task, ModuleType) else sys.modules.get(type(task).__module__)
    return config_keys(getattr(module, "CONFIG_KEYS", {}))


def _use_overrides(model: Any, overrides: list[str], run: str) -> None:
    """Apply ``--set data.KEY=VALUE`` to how a loaded run reads its inputs, or refuse them in one line."""
    if not overrides:
        return
    if not hasattr(model, "use_overrides"):
        raise ValueError(f"{run}: this run reads no input files that --set could change; drop --set")
    model.use_overrides(overrides)


def _json_text(obj: Any, **kw: Any) -> str:
    """``json.dumps`` for ``--json`` output that stays valid JSON: NaN and infinities (a metric with
    nothing to score, e.g. MASE on a flat series) are written as null, not as Python's ``NaN``."""
    import json
    import math

    def finite(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: finite(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [finite(v) for v in value]
        return value

    try:
        return json.dumps(obj, allow_nan=False, **kw)
    except ValueError:  # a non-finite float somewhere
        return json.dumps(finite(obj), allow_nan=False, **kw)


def _notes(notes: list[tuple[str, str]]) -> None:
    for where, note in notes:
        typer.echo(f"note: {where}: {note}" if where else f"note: {note}", err=True)
_PAIRED_OPTIONS = ("--train", "--dev", "--data")


def _split_path_pairs(args: list[str]) -> list[str]:
    """``--train a b`` -> ``--train a --train b``: ``b`` is taken as a second path unless it is an
    option, a task name or a run folder."""
    from pathlib import Path

    from .tasks import TASKS

    out, i = [], 0
    while i < len(args):
        out.append(args[i])
        if args[i] in _PAIRED_OPTIONS and i + 2 < len(args):
            extra = args[i + 2]
            if not extra.startswith("-") and extra not in TASKS and not (Path(extra) / "model.json").is_file():
                out += [args[i + 1], args[i], extra]
                i += 3
                continue
        i += 1
    return out


class _PairedPathsCommand(TyperCommand):
    """A command whose ``--train``/``--dev``/``--data`` take one path or two (source and target files)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _split_path_pairs(list(args)))


def _paths(values: list[str] | None, option: str, paired: bool) -> str | tuple[str, ...] | None:
    """One path as a string; two as a tuple, for tasks that read aligned pairs of files (translation)."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    if not paired or len(values) > 2:
        raise ValueError(f"{option} takes {'one or two paths' if paired else 'one path'} for this task, got "
                         f"{len(values)}: {' '.join(values)}")
    return tuple(values)


@app.command("tasks")
def list_tasks() -> None:
    """List the tasks with a one-line description each."""
    from .tasks import TASKS

    for name, (_, description) in sorted(TASKS.items()):
        typer.echo(f"{name:22s} {description}")


@app.command(cls=_PairedPathsCommand)
def train(
    task: str = typer.Argument(..., help="Task name (see 'rnnkit tasks')."),
    train_file: list[str] | None = typer.Option(None, "--train", "--data", help="Training data file, folder or archive (translation: two files, --train train.de train.en); --data is the same option."),
    dev_file: list[str] | None = typer.Option(None, "--dev", help="Dev data for model selection (default: hold out part of --train; translation: two files)."),
    config: str | None = typer.Option(None, "--config", help="YAML config file."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config key: --set model.cell=gru (repeatable)."),
    out: str = typer.Option("runs", "--out", help="Folder that receives the run folder."),
    name: str | None = typer.Option(None, "--name", help="Run folder name (default: <task>-<n>)."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and every option, then exit."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars or log lines; print the run folder only."),
    as_json: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
    resume: str | None = typer.Option(None, "--resume", help="Continue a run folder from its last checkpoint "
                                      "(same config and data; --set may change train.epochs, train.max_minutes and train.patience)."),
    checkpoint_minutes: float = typer.Option(10.0, "--checkpoint-minutes", help="Also checkpoint in the middle of an "
                                             "epoch this often, for --resume (0: at the ends of epochs only)."),
) -> None:
    """Train a task model from raw files; writes a run folder with model, metrics, report and log."""

    from .tasks import get_task
    from .tasks.config import describe, dump_yaml, load_config, shown

    if not (checkpoint_minutes >= 0 and checkpoint_minutes < float("inf")):
        raise _fail(ValueError(f"--checkpoint-minutes must be >= 0 (0: ends of epochs only), got {checkpoint_minutes}"))
    interval = checkpoint_minutes or None
    if resume is not None:
        _resume(task, resume, train_file, dev_file, config, overrides, name, quiet, as_json, interval)
        return
    try:
        module = get_task(task)
        cfg = load_config(module.Config, config, overrides)
        _absolute_paths(module, cfg)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    if print_config:
        typer.echo(dump_yaml(cfg))
        typer.echo("# options: key (type, default): help")
        for key, tp, default, help_text in describe(module.Config):
            typer.echo(f"#   {key} ({tp}, {shown(default)}): {help_text}")
        return
    try:
        paired = getattr(module, "PAIRED_INPUT", False)
        train_path, dev_path = _paths(train_file, "--train", paired), _paths(dev_file, "--dev", paired)
    except ValueError as err:
        raise _fail(err) from None
    if train_path is None:
        raise _fail(ValueError("--train FILE is required"))

    from .tasks.run import RunDir

    try:
        run = RunDir.create(out, task, name, exist_ok=False)
        run.write_text("config.yaml", dump_yaml(cfg))
        run.record_inputs(task, train_path, dev_path)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    _run_training(module, task, cfg, train_path, dev_path, run, [], quiet, as_json, interval=interval)


def _absolute_paths(module: Any, cfg: Any) -> None:
    """Config values that name existing files (the task's ``PATH_KEYS``, e.g. ``decode.lexicon``) made
    absolute, so the run's config.yaml works from any folder (evaluate, transcribe, --resume)."""
    from pathlib import Path

    for key in getattr(module, "PATH_KEYS", ()):
        section, name = key.split(".")
        part = getattr(cfg, section)
        value = getattr(part, name)
        if isinstance(value, str) and value and Path(value).is_file():  # not decode.lexicon=train
            setattr(part, name, str(Path(value).resolve()))


def _resume(task: str, path: str, train_file: list[str] | None, dev_file: list[str] | None, config: str | None,
            overrides: list[str], name: str | None, quiet: bool, as_json: bool, interval: float | None) -> None:
    """``rnnkit train TASK --resume RUN``: the run's own config and data, from its last checkpoint."""
    from .tasks import get_task
    from .tasks.config import dump_yaml, load_config
    from .tasks.run import RESUME_KEYS, RunDir

    try:
        if config is not None or name is not None:
            raise ValueError("--resume continues a run with its own config.yaml and folder; drop --config/--name")
        changed = sorted({o.split("=", 1)[0].strip() for o in overrides} - set(RESUME_KEYS))
        if changed:
            raise ValueError(f"--resume cannot change {', '.join(changed)} (the run's model and data are fixed); "
                             f"only {', '.join(RESUME_KEYS)}, or train a new run")
        module = get_task(task)
        paired = getattr(module, "PAIRED_INPUT", False)
        run, train_path, dev_path = RunDir.for_resume(path, task, _paths(train_file, "--train", paired),
                                                      _paths(dev_file, "--dev", paired))
        cfg = load_config(module.Config, str(run.file("config.yaml")), overrides)
        history = run.file("history.csv")
        done = max(0, len(history.read_text(encoding="utf-8").splitlines()) - 1) if history.is_file() else 0
        if cfg.train.epochs < done:  # nothing would train, and config.yaml would say fewer epochs than the run has
            raise ValueError(f"--resume: {run.path} has trained {done} epochs already; train.epochs={cfg.train.epochs} "
                             f"is fewer: give train.epochs={done} or more")
        run.write_text("config.yaml", dump_yaml(cfg))
    except _USER_ERRORS as err:
        raise _fail(err) from None
    log_file = run.file("train.log")
    earlier = log_file.read_text(encoding="utf-8").splitlines() if log_file.is_file() else []
    _run_training(module, task, cfg, train_path, dev_path, run, earlier, quiet, as_json, resume=True,
                  interval=interval)


def _run_training(module: Any, task: str, cfg: Any, train_path: Any, dev_path: Any, run: Any, log_lines: list[str],
                  quiet: bool, as_json: bool, *, interval: float | None, resume: bool = False) -> None:
    """Run the task's ``train`` in ``run`` with the log, errors and summary of ``rnnkit train``."""
    import contextlib
    import sys

    from rich.console import Console

    from .tasks.engine import checkpoint_interval, resuming
    from .training.interrupts import SIGTERM_STATUS, ended_by_sigterm, signals_ignored

    console = Console(stderr=True, quiet=quiet or as_json)
    # the bar is drawn on stderr (rnnkit.progress), and only where someone watches it
    show_bar = not (quiet or as_json) and sys.stderr.isatty()

    def log(message: str) -> None:
        log_lines.append(message)
        run.write_text("train.log", "\n".join(log_lines) + "\n")
        console.print(message, highlight=False)

    log(f"run folder: {run.path}" + (" (resumed)" if resume else ""))
    try:
        with _config_keys(module), (resuming() if resume else contextlib.nullcontext()), checkpoint_interval(interval):
            metrics = module.train(cfg, train_path, dev_path, run, log, progress=show_bar)
    except BaseException as err:
        stopped = isinstance(err, KeyboardInterrupt | SystemExit)
        with signals_ignored() if stopped else contextlib.nullcontext():  # a second Ctrl-C: the cleanup still ends
            _failed_run(run, log_lines, err, task)
        if isinstance(err, _USER_ERRORS):
            raise _fail(err) from None
        if ended_by_sigterm(err):  # SIGTERM (timeout, a scheduler): 143, as a shell reports it
            raise typer.Exit(SIGTERM_STATUS) from None
        if stopped:  # Ctrl-C: 130, as a shell reports it
            raise typer.Exit(130) from None
        raise
    if as_json:
        typer.echo(_json_text({"run": str(run.path), **metrics}, indent=2))
        return
    if quiet:
        typer.echo(str(run.path))
        return
    _summary(console, run.path, metrics)


def _failed_run(run: Any, log_lines: list[str], err: BaseException, task: str = "TASK") -> None:
    """After a failed ``train``: remove the run folder when training wrote no weights yet (so the next
    run takes its number), else keep it, with the error at the end of its log and, when an epoch
    finished, the command that resumes it."""
    import contextlib
    import shutil

    from .tasks.engine import LAST_CHECKPOINT, ResumeError
    from .training.interrupts import ended_by_sigterm

    interrupted = isinstance(err, KeyboardInterrupt | SystemExit)  # Ctrl-C (or an exit from inside training)
    word = "terminated (SIGTERM)" if ended_by_sigterm(err) else "interrupted"
    if not run.has_weights():
        shutil.rmtree(run.path, ignore_errors=True)
        typer.echo(f"{word}: {run.path} removed: training wrote no weights yet (nothing to resume)"
                   if interrupted else f"note: {run.path} removed: training wrote nothing to keep", err=True)
        return
    reason = word if interrupted else " ".join(str(err).split()) or type(err).__name__
    log_lines.append(f"error: {reason}")
    resume = f"rnnkit train {_quoted(task)} --resume {_quoted(str(run.path))}"
    resumable = run.file(LAST_CHECKPOINT).is_file() and not isinstance(err, ResumeError)
    if interrupted:  # the run folder says whether --resume can continue it
        log_lines.append(f"continue it with: {resume}" if resumable else
                         f"no {LAST_CHECKPOINT} to resume from: --resume cannot continue this run; train again")
    with contextlib.suppress(OSError):  # a full disk (often the error itself): the error line is printed anyway
        run.write_text("train.log", "\n".join(log_lines) + "\n")
    if isinstance(err, ResumeError):  # nothing was trained or changed: the error line alone says it
        return
    kept = [n for n in ("model.safetensors", "checkpoint-best.safetensors", LAST_CHECKPOINT) if run.file(n).is_file()]
    if interrupted:  # one line
        typer.echo(f"{word}: {run.path} keeps the weights written so far ({', '.join(kept)}); "
                   + (f"continue it with: {resume}" if resumable else "--resume cannot continue it"), err=True)
        return
    typer.echo(f"note: training stopped; {run.path} keeps the weights written so far ({', '.join(kept)})", err=True)
    if resumable:
        typer.echo(f"note: continue it with: {resume}", err=True)


def _quoted(word: str) -> str:
    """``word`` as a shell reads it back (a run folder with spaces, as printed in a command to copy)."""
    import shlex

    return shlex.quote(word)


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


@app.command(cls=_PairedPathsCommand)
def evaluate(
    run: str = typer.Argument(..., help="Run folder written by 'rnnkit train'."),
    data: list[str] = typer.Option(..., "--data", help="Labelled data in the training format (translation: two files)."),
    overrides: list[str] = typer.Option([], "--set", help="Change how --data is read: --set data.member_prefix=aclImdb/test"),
    as_json: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
    ensemble: list[str] = typer.Option([], "--ensemble", help="Tagging runs: another run that decides with RUN "
                                       "(repeatable; the tags most probable on the members' average)."),
) -> None:
    """Evaluate a trained run on labelled data (needs nothing but the run folder)."""

    from .tasks import load_ensemble

    try:
        model = load_ensemble([run, *ensemble])
        with _config_keys(model):
            metrics = model.evaluate(_paths(data, "--data", getattr(model, "paired_input", False)), overrides)  # type: ignore[attr-defined]
    except _USER_ERRORS as err:
        raise _fail(err) from None
    _notes([("", note) for note in metrics.get("notes", [])])
    if as_json:
        typer.echo(_json_text(metrics, indent=2))
        return
    typer.echo(_metrics_text(metrics))


def _metrics_text(metrics: dict[str, Any]) -> str:
    """``key value`` lines, aligned (floats with 4 decimals, counts as integers), then the per-type
    table of entity scores (tagging) or the per-class table (classification) when there is one."""
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            if isinstance(v, float | int | str)]
    width = max((len(k) for k, _ in rows), default=0)
    lines = [f"{k:{width}s}  {v}" for k, v in rows]
    per_type = metrics.get("per_type")
    if isinstance(per_type, dict) and per_type:
        lines += _score_table("type", [(str(name), s["precision"], s["recall"], s["f1"], s["support"])
                                       for name, s in per_type.items()])
    per_class, classes = metrics.get("per_class"), metrics.get("classes")
    if isinstance(per_class, dict) and isinstance(classes, list) and classes:
        p, r, f, n = (per_class.get(key) for key in ("precision", "recall", "f1", "support"))
        if isinstance(p, list) and isinstance(r, list) and isinstance(f, list) and isinstance(n, list):
            lines += _score_table("class", [(str(c), *row) for c, *row in zip(classes, p, r, f, n)])
    return "\n".join(lines)


def _score_table(label: str, rows: list[tuple[str, float, float, float, int]]) -> list[str]:
    """A blank line, then ``label precision recall f1 support`` rows, aligned."""
    w = max(len(name) for name in [label, *(r[0] for r in rows)])
    lines = ["", f"{label:{w}s}  precision  recall      f1  support"]
    for name, p, r, f, support in rows:
        lines.append(f"{name:{w}s}  {p:9.4f}  {r:6.4f}  {f:6.4f}  {int(support):7d}")
    return lines


@app.command()
def predict(
    run: str = typer.Argument(..., help="Run folder written by 'rnnkit train'."),
    inputs: list[str] = typer.Argument(None, help="Inputs (texts) to predict."),
    file: str | None = typer.Option(None, "--file", help="Predict every line of this file, - for standard input "
                                    "(text classification: every record of a CSV/TSV/JSONL file, its data.text_column; forecasting: "
                                    "the history CSV to forecast from, default the training file)."),
    explain: bool = typer.Option(False, "--explain", help="Show which tokens carried each decision."),
    as_json: bool = typer.Option(False, "--json", help="Print predictions as JSON lines."),
    conll: bool = typer.Option(False, "--conll", help="Tagging runs: read --file as a CoNLL column file and print "
                               "it with the predicted tag appended to each token line."),
    ensemble: list[str] = typer.Option([], "--ensemble", help="Tagging runs: another run that decides with RUN "
                                       "(repeatable; the tags most probable on the members' average)."),
    overrides: list[str] = typer.Option([], "--set", help="Change how input files are read: --set "
                                        "data.text_column=review, data.images_key=images (data.* keys that say how "
                                        "files are read; translation: decode.*)."),
) -> None:
    """Predict with a trained run: label and probabilities per input."""

    from .tasks import load_ensemble

    try:
        if conll and (file is None or inputs):
            raise ValueError("--conll tags a file: give --file FILE (a CoNLL column file) and no inline inputs")
        if conll and (as_json or explain):
            raise ValueError("--conll prints CoNLL lines: drop --json and --explain, or drop --conll")
        model = load_ensemble([run, *ensemble])
        with _config_keys(model), _input_file(file) as path:
            _use_overrides(model, overrides, run)
            if conll:
                if not hasattr(model, "tag_conll"):
                    raise ValueError(f"{run} is not a tagging run; --conll needs one (drop --conll)")
                for line in model.tag_conll(path):
                    typer.echo(line)
                return
            items = [(text, f"input {i + 1}") for i, text in enumerate(inputs or [])]
            whole_files = getattr(model, "predicts_whole_files", False)  # forecasting: inputs are CSV paths
            if file is not None and whole_files:  # --file is the history CSV: first, before a future-covariates CSV
                items = [(path, file), *items]
            elif file is not None:  # sources named as given ("stdin:3" for --file -), not as the copy of a pipe
                shown = _SHOWN_AS.get(path, path)
                items += [(text, shown + where[len(path):] if where.startswith(path) else where)
                          for text, where in _file_inputs(model, path)]
            if not items and not whole_files:  # a forecaster with no input forecasts from its training file
                raise ValueError(f"nothing to predict: {_SHOWN_AS.get(path, path)} holds no inputs; give a file with inputs, or inputs as "
                                 "arguments" if file is not None else
                                 "nothing to predict: give inputs as arguments or --file FILE")
            if explain and not hasattr(model, "explain"):
                raise ValueError(f"--explain is available for text-classification runs only, and {run} is not one; "
                                 "drop --explain")
            texts = [text for text, _ in items]
            results = [model.explain(t) for t in texts] if explain else model.predict(texts)  # type: ignore[attr-defined]
    except _USER_ERRORS as err:
        raise _fail(err) from None
    # a result of a file (speech) names it by its path, not by its place among the inline inputs ("input 1")
    _notes([(r.get("path", where), r["note"]) for (_, where), r in zip(items, results)
            if isinstance(r, dict) and "note" in r])
    if not results:  # e.g. an .npz or a folder holding no images: say so rather than print nothing
        typer.echo("note: nothing to predict: the inputs hold no items (an empty array, file or folder)", err=True)
    separator = str(getattr(getattr(getattr(model, "prep", None), "cfg", None), "label_separator", "|"))
    for result in results:
        if as_json:
            typer.echo(_json_text(result))
            continue
        if "probabilities" in result:
            probs, label = result["probabilities"], result["label"]
            if isinstance(label, list):  # multi-label: the labels joined as in the training files
                label = separator.join(map(str, label)) or "(none)"
            shown = result.get("path", result.get("text", ""))  # the input: a wav file's path, or the text
            typer.echo(f"{label}\t{max(probs.values()):.3f}\t{str(shown)[:80]}")
        elif "tags" in result:
            typer.echo(" ".join(f"{tok}/{tag}" for tok, tag in zip(result["tokens"], result["tags"])))
            for entity in result.get("entities", []):
                score = f"\t{entity['score']:.3f}" if "score" in entity else ""
                typer.echo(f"  {entity['type']}\t{entity['text']}{score}")
        else:
            typer.echo(_json_text(result))
        if explain:
            top = ", ".join(f"{tok} ({w:.2f})" for tok, w in result.get("top_tokens", result.get("weights", []))[:8])
            typer.echo(f"  {result['method']}: {top or '(no tokens)'}")


def _file_inputs(model: Any, file: str) -> list[tuple[str, str]]:
    """``(input, "file:line")`` pairs from ``predict --file``: the run's own reader where it has one
    (text classification: CSV/TSV/JSONL text columns), else one input per line; undecodable bytes are
    a one-line error with the file and line."""
    from pathlib import Path

    from .data.io import iter_lines

    if hasattr(model, "texts_of_file"):
        return model.texts_of_file(file)  # type: ignore[no-any-return]
    path = Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"input file {'is a folder, not a file' if path.is_dir() else 'not found'}: {path}; "
                                "fix: give the path of a text file with one input per line (relative to "
                                f"{Path.cwd()})")
    errors = getattr(getattr(getattr(model, "prep", None), "cfg", None), "encoding_errors", "strict")
    return [(line, f"{path}:{number}") for number, line in iter_lines(path, errors=errors)]


@app.command()
def generate(
    run: str = typer.Argument(..., help="Run folder of a language-model task."),
    prompt: str = typer.Option("", "--prompt", help="Text that primes the model's state."),
    length: int = typer.Option(200, "--length", min=1, help="Maximum new tokens."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature (> 0)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold in (0, 1] (1: off)."),
    greedy: bool = typer.Option(False, "--greedy", help="Always take the most likely token."),
    seed: int | None = typer.Option(None, "--seed", help="Fix the sampling for reproducible output."),
    stop: str | None = typer.Option(None, "--stop", help="Stop at this token (word models stop at <eos>)."),
) -> None:
    """Generate text with a trained language model, streamed as it is produced."""
    import contextlib

    from .tasks import load_trained
    from .tasks.language_model import TerminalStream, TrainedLanguageModel

    try:
        model = load_trained(run)
        if not isinstance(model, TrainedLanguageModel):
            raise ValueError(f"{run} is not a language-model run (train one with 'rnnkit train language-model')")
        level = model.prep.cfg.level
        _, unknown = model.prep.encode_prompt(prompt)
        if unknown:
            typer.echo(f"note: prompt tokens not in the vocabulary were read as <unk>: {' '.join(map(repr, unknown))}",
                       err=True)
        # the continuation goes on the prompt's line (words after a space); the prompt is shown with the
        # first new token, so settings that generate refuses print the error alone
        gap = " " if level == "word" and prompt and not prompt[-1].isspace() else ""
        shown: list[bool] = []
        # written as the returned text reads: a subword continuing the prompt's line keeps its leading space
        stream = TerminalStream(level, line_start=level != "subword" or not prompt or prompt.endswith("\n"))

        def on_token(token: str) -> None:
            if not shown:
                typer.echo(prompt + gap, nl=False)
                shown.append(True)
            stream(token)

        try:
            model.generate(prompt, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                           greedy=greedy, seed=seed, stop=stop, on_token=on_token)
        except KeyboardInterrupt:  # Ctrl-C mid-stream: end the streamed line, so "interrupted" gets its own
            if shown:
                with contextlib.suppress(OSError, ValueError):
                    typer.echo("")
            raise
        typer.echo("")
    except _USER_ERRORS as err:
        raise _fail(err) from None


bench_app = typer.Typer(help="Benchmarks: long-range memory tasks.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def _split_names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _stop_word_and_status(err: BaseException) -> tuple[str, int | None]:
    """How a command stopped by ``err`` says it and the status it exits with: Ctrl-C
    ("interrupted", 130), SIGTERM ("terminated (SIGTERM)", 143), another exit ("interrupted",
    ``None``: its own status is kept)."""
    from .training.interrupts import SIGTERM_STATUS, ended_by_sigterm

    if ended_by_sigterm(err):
        return "terminated (SIGTERM)", SIGTERM_STATUS
    return "interrupted", 130 if isinstance(err, KeyboardInterrupt) else None


def _write_results(out: str, texts: dict[str, str], plot: Any) -> Any:
    """Write ``texts`` (file name: content) and ``plot(folder)`` into the folder ``out``, as one
    piece: Ctrl-C and SIGTERM are ignored for the moment it takes (a stop between the files left a
    report without its plot or JSON; the work is done by then), and a file that cannot be written is
    a one-line error. Returns the folder."""
    from pathlib import Path

    from .training.interrupts import signals_ignored

    folder = Path(out)
    try:
        with signals_ignored():
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in texts.items():
                (folder / name).write_text(text, encoding="utf-8")
            plot(folder)
    except OSError as err:
        raise _fail(ValueError(f"cannot write the results to --out {out} ({err.strerror or err}); "
                               "give another --out")) from None
    return folder


def _check_out_folder(out: str) -> None:
    """``--out`` must be a folder or not exist yet: an existing file, or a file where a folder above it
    would be made, is a one-line error before any work."""
    from .insight.memory import check_out_folder

    try:
        check_out_folder(out)
    except ValueError as err:
        raise _fail(err) from None


@bench_app.command("memory")
def bench_memory(
    task: str = typer.Option("adding", "--task", help="Memory task: adding, copy or selective-copy."),
    length: str = typer.Option("50", "--length", help="Sequence length(s) T, comma-separated: --length 50,100,200."),
    cells: str = typer.Option("rnn,lstm,gru", "--cell", "--cells", help="Cells, comma-separated."),
    budget_steps: int = typer.Option(1000, "--budget-steps", min=1, help="Adam steps per training run."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Training runs (seeds) per cell and length."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Sequences per step."),
    hidden_size: int = typer.Option(64, "--hidden-size", min=1, help="Hidden units."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="Adam learning rate."),
    clip_norm: float = typer.Option(1.0, "--clip-norm", help="Gradient clipping norm (0: no clipping)."),
    memorize: int = typer.Option(10, "--memorize", min=1, help="Symbols to recall (copy tasks)."),
    success_rate: float = typer.Option(0.5, "--success-rate", help="A cell learns a length when at least this "
                                       "fraction of its seeds succeed there (for 'where each cell stops learning')."),
    out: str = typer.Option("runs/bench-memory", "--out", help="Folder for memory.md, memory.json, memory.png."),
    quiet: bool = typer.Option(False, "--quiet", help="Print only the table."),
) -> None:
    """Train each cell on a long-range memory task under a fixed budget; success rate against T, and
    where each cell stops learning."""
    import json

    from .insight.memory import run_memory_benchmark

    try:
        lengths = [int(v) for v in _split_names(length)]
    except ValueError:
        raise _fail(ValueError(f"--length: expected integers separated by commas, got {length!r}")) from None
    _check_out_folder(out)  # before the training, not after it
    try:
        bench = run_memory_benchmark(task, lengths, _split_names(cells), budget_steps=budget_steps, seeds=seeds,
                                     batch_size=batch_size, hidden_size=hidden_size, learning_rate=learning_rate,
                                     clip_norm=clip_norm, memorize=memorize, success_rate=success_rate,
                                     log=(lambda _: None) if quiet else (lambda m: typer.echo(m, err=True)))
    except _USER_ERRORS as err:
        raise _fail(err) from None
    except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C, SIGTERM (or an exit from inside training)
        word, status = _stop_word_and_status(err)
        typer.echo(f"{word}: the benchmark stopped before its end; nothing written to {out}", err=True)
        if status is not None:  # said above: 130 or 143, and no second line
            raise typer.Exit(status) from None
        raise
    folder = _write_results(out, {"memory.md": bench.markdown(),
                                  "memory.json": json.dumps(bench.to_json(), indent=2, default=str) + "\n"},
                            lambda folder: bench.plot(folder / "memory.png"))
    typer.echo(bench.markdown())
    if not quiet:
        typer.echo(f"written: {folder}/memory.md, memory.json, memory.png", err=True)


@app.command()
def diagnose(
    runs: list[str] | None = typer.Argument(None, help="Run folder(s) to diagnose, one line each in the table and "
                                            "plot (or use --fresh)."),
    fresh: bool = typer.Option(False, "--fresh", help="Diagnose freshly initialised models on a memory task."),
    cells: str = typer.Option("rnn,lstm,gru", "--cell", "--cells", help="Cells for --fresh, comma-separated."),
    task: str = typer.Option("adding", "--task", help="Memory task for --fresh: adding, copy or selective-copy."),
    length: int = typer.Option(100, "--length", min=1, help="Sequence length T for --fresh."),
    hidden_size: int = typer.Option(64, "--hidden-size", min=1, help="Hidden units for --fresh."),
    data: str | None = typer.Option(None, "--data", help="Labelled data for the RUN(s) (the first --samples "
                                    "examples; forecasting: windows from the end of each series)."),
    samples: int = typer.Option(32, "--samples", min=1, help="Batch size of the diagnosed batch."),
    norm: str = typer.Option("spectral", "--norm", help="Jacobian norm: spectral or frobenius."),
    exploding_scale: float = typer.Option(3.0, "--exploding-scale",
                                          help="--fresh: add a tanh RNN with W_hh = scale x orthogonal and the "
                                               "clipping demo (0: skip)."),
    clip_norm: float = typer.Option(1.0, "--clip-norm", help="Clipping norm for the exploding case and the "
                                    "clipping demo (0: no clipping, and no demo)."),
    out: str = typer.Option("runs/diagnose", "--out", help="Folder for diagnose.md, diagnose.json, gradient_norms.png."),
    as_json: bool = typer.Option(False, "--json", help="Print the summaries as JSON."),
) -> None:
    """Vanishing and exploding gradients: ||dL/dh_t|| through time, Jacobian products, saturation, horizon."""
    import json

    from .insight import gradients as g
    from .insight.memory import clip_norm_or_none

    _check_out_folder(out)
    try:
        if fresh == bool(runs):
            raise ValueError("give either RUN folder(s) or --fresh")
        if exploding_scale < 0:
            raise ValueError(f"--exploding-scale must be >= 0 (0: skip the exploding case), got {exploding_scale:g}")
        clip = clip_norm_or_none(clip_norm)
        if fresh:
            reports, clipping = g.diagnose_fresh(_split_names(cells), task=task, length=length,
                                                 hidden_size=hidden_size, batch_size=samples, norm=norm,
                                                 exploding_scale=exploding_scale or None, clip_norm=clip)
            title = f"Gradient diagnostics: fresh models on {task} (T={length})"
        else:
            if data is None:
                raise ValueError("diagnosing a RUN needs --data FILE (labelled, in the training format)")
            assert runs
            reports, clipping = g.diagnose_runs(runs, data, samples=samples, norm=norm), None
            title = f"Gradient diagnostics: {', '.join(runs)} on {data}"
    except _USER_ERRORS as err:
        raise _fail(err) from None
    payload = g.json_safe({"reports": [r.to_json() for r in reports], "clipping": clipping})  # nan/inf as strings
    folder = _write_results(out, {
        "diagnose.md": g.diagnostics_markdown(reports, clipping, title) + "\n![gradient norms](gradient_norms.png)\n",
        "diagnose.json": json.dumps(payload, indent=2, default=str) + "\n"},
        lambda folder: g.plot_gradient_norms(reports, folder / "gradient_norms.png", title=title, clipping=clipping))
    if as_json:
        typer.echo(json.dumps(g.json_safe([r.summary() for r in reports]), indent=2, default=str))
        return
    typer.echo(g.diagnostics_markdown(reports, clipping, title))
    typer.echo(f"written: {folder}/diagnose.md, diagnose.json, gradient_norms.png", err=True)


@app.command()
def compare(
    task: str = typer.Argument(..., help="Task name (see 'rnnkit tasks')."),
    cells: str = typer.Option("rnn,lstm,gru", "--cells", "--cell", help="Cells to compare, comma-separated."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Training runs (seeds) per cell."),
    train_file: str = typer.Option(..., "--train", help="Training data, as for 'rnnkit train'."),
    dev_file: str | None = typer.Option(None, "--dev", help="Dev data (default: the task holds out part of --train)."),
    config: str | None = typer.Option(None, "--config", help="YAML config shared by every cell."),
    overrides: list[str] = typer.Option([], "--set", help="Config override shared by every cell (repeatable)."),
    metric: str | None = typer.Option(None, "--metric", help="Dev metric to compare (default: the one the task "
                                      "selects on; a wrong name lists the task's metrics)."),
    out: str = typer.Option("runs/compare", "--out", help="Empty or new folder for the run folders and "
                            "compare.md/json/png."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Clear --out first when it holds an earlier "
                                   "comparison (compare.* and <cell>-seed<k> folders only)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress lines."),
) -> None:
    """Train a task with each cell under the same config and budget; compare quality, time, size, memory."""

    from .insight.compare import compare_cells
    from .tasks import get_task

    try:
        with _config_keys(get_task(task)):  # data errors name the --set data.KEY=VALUE that fixes them
            result = compare_cells(task, _split_names(cells), train_file, dev_path=dev_file, seeds=seeds,
                                   config_path=config, overrides=overrides, out=out, metric=metric,
                                   overwrite=overwrite, log=(lambda _: None) if (quiet or as_json)
                                   else (lambda m: typer.echo(m, err=True)))
    except _USER_ERRORS as err:
        raise _fail(err) from None
    except (KeyboardInterrupt, SystemExit) as err:  # the log said which runs finished, unless it was silenced
        word, status = _stop_word_and_status(err)
        if quiet or as_json:
            typer.echo(f"{word}: no report written; the finished runs are in {out}; start again with --overwrite",
                       err=True)
        if status is not None:  # said (by the log or above): 130 or 143, and no second line
            raise typer.Exit(status) from None
        raise
    if as_json:
        typer.echo(_json_text(result.to_json(), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{task}: cells compared (dev {result.metric}, {result.direction}; mean ± std over seeds)")
    for column in ("cell", "seeds", "mean", "std", "train s", "parameters", "peak MiB"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for row in result.formatted_rows():
        table.add_row(*row)
    console = Console()
    console.print(table)
    cell, reason = result.recommendation()
    console.print(f"recommended: {cell}: {reason}", highlight=False)
    console.print(f"report: {out}/compare.md", highlight=False)


@app.command()
def translate(
    run: str = typer.Argument(..., help="Run folder of a translation run."),
    texts: list[str] = typer.Argument(None, help="Sentences to translate."),
    file: str | None = typer.Option(None, "--file", help="Translate every line of this file (- for standard input)."),
    beam: int | None = typer.Option(None, "--beam", min=1, help="Beam size (default: the run's decode.beam_size; 1 = greedy)."),
    nbest: int | None = typer.Option(None, "--nbest", min=1, help="Print the N best translations ('i ||| translation "
                                     "||| score'; default: the run's decode.nbest)."),
    attention_plot: str | None = typer.Option(None, "--attention-plot", help="Save the first sentence's attention as a PNG."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut sentences longer than the model's maximum "
                                  "(data.max_source_tokens at training) instead of stopping with an error."),
    overrides: list[str] = typer.Option([], "--set", help="Decoding option: --set decode.length_penalty=0.6 "
                                        "(decode.* keys, repeatable)."),
) -> None:
    """Translate sentences with a trained translation run (beam search, n-best lists, attention plot)."""

    from .tasks import load_trained

    try:
        model = load_trained(run)
        if not hasattr(model, "translate"):
            raise ValueError(f"{run} is not a translation run (train one with 'rnnkit train translation')")
        _use_overrides(model, overrides, run)
        sentences = list(texts or [])
        if file is not None:
            with _config_keys(model), _input_file(file) as path:
                sentences += [text for text, _ in _file_inputs(model, path)]
        if not sentences:
            raise ValueError(f"nothing to translate: {'stdin' if file == '-' else file} holds no sentences; give a file with one sentence a "
                             "line, or sentences as arguments" if file is not None else
                             "nothing to translate: give sentences as arguments or --file FILE")
        results = model.translate(sentences, beam_size=beam, nbest=nbest, truncate=truncate)  # type: ignore[attr-defined]
        if attention_plot is not None:
            first = next((s for s in sentences if s.strip()), "")
            model.plot_attention(first, attention_plot, beam_size=beam,  # type: ignore[attr-defined]
                                 truncate=truncate)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    for i, result in enumerate(results):
        if as_json:
            typer.echo(_json_text(result, ensure_ascii=False))
        elif len(result.get("nbest", ())) > 1:  # --nbest N, or a run (or --set decode.nbest) that keeps N
            for hyp in result["nbest"]:
                typer.echo(f"{i} ||| {hyp['translation']} ||| {hyp['score']:.4f}")
        else:
            typer.echo(result["translation"])
    if attention_plot is not None:
        typer.echo(f"attention plot: {attention_plot}", err=True)


@app.command()
def transcribe(
    run: str = typer.Argument(..., help="Run folder of a speech task."),
    files: list[str] = typer.Argument(..., help="Audio files (wav, flac...); other rates are resampled."),
    beam: int | None = typer.Option(None, "--beam", min=1, help="CTC beam size (1: greedy; default: the run's)."),
    lexicon: str | None = typer.Option(None, "--lexicon", help="Restrict output to words: 'train' or a word-list file."),
    stream: bool = typer.Option(False, "--stream", help="Feed the audio chunk by chunk with carried state."),
    chunk_ms: float = typer.Option(200.0, "--chunk-ms", min=0.1, help="Chunk length for --stream (ms)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per file."),
    overrides: list[str] = typer.Option([], "--set", help="How audio is read and decoded: --set data.mono=first "
                                        "(multi-channel files: downmix, first or error); --set "
                                        "decode.max_chunk_seconds=60 (longer files are decoded in chunks)."),
) -> None:
    """Transcribe (or classify) audio files with a trained speech run; real-time factor on stderr."""

    from .tasks import load_trained
    from .tasks.speech import TrainedSpeechModel

    try:
        model = load_trained(run)
        if not isinstance(model, TrainedSpeechModel):
            raise ValueError(f"{run} is not a speech run (train one with 'rnnkit train speech')")
        _use_overrides(model, overrides, run)
        if model.prep.head == "classifier" and (beam is not None or lexicon is not None):
            typer.echo(f"note: {run} classifies whole clips: --beam and --lexicon apply to CTC runs only "
                       "(data.mode=connected_digits or transcripts) and are ignored here", err=True)
        with _config_keys(model):
            results = model.transcribe(files, beam_size=beam, lexicon=lexicon, stream=stream, chunk_ms=chunk_ms)
    except _USER_ERRORS as err:
        raise _fail(err) from None
    for r in results:
        for note in r["notes"]:
            typer.echo(f"note: {r['path']}: {note}", err=True)
        typer.echo(_json_text(r) if as_json else f"{r['path']}\t{r['text']}")
    audio = sum(r["seconds"] / r["rtf"] for r in results)
    typer.echo(f"real-time factor {sum(r['seconds'] for r in results) / audio:.4f} ({audio:.1f} s of audio)", err=True)


@app.command()
def version() -> None:
    """Print the rnnkit and torch versions."""
    import torch

    from . import __version__

    typer.echo(f"rnnkit {__version__} (torch {torch.__version__})")


def _closed_pipe() -> int:
    """The reader of our output went away (``rnnkit predict ... | head``): not an error worth a message.

    Points stdout at ``/dev/null`` so that flushing it at exit does not raise again (the Python
    documentation's recipe for SIGPIPE) and returns the exit status, 1, as Python uses for EPIPE.
    """
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured in tests): nothing left to flush
        pass
    return 1


def main() -> None:
    from .runtime import reuse_freed_memory_from_env

    try:  # a training step re-faults every page of its buffers when glibc returns them: see rnnkit.runtime
        reuse_freed_memory_from_env()
    except ValueError as err:  # one line, as every other error of the command line
        typer.echo(f"error: {err}; set it to 1 or 0, or unset it", err=True)
        raise SystemExit(2) from None
    from .training.interrupts import Terminated, exit_on_sigterm

    exit_on_sigterm()  # SIGTERM (timeout, a scheduler) ends a command as Ctrl-C does: cleaned up, and said
    try:
        app()
    except BrokenPipeError:
        raise SystemExit(_closed_pipe()) from None
    except SystemExit as err:
        if err.code in (130, 143):  # interrupted: a second Ctrl-C during the interpreter's shutdown would
            import signal  # print a traceback from an exit handler (torch's) instead of ending quietly

            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            # typer turns a Ctrl-C the command did not catch into a silent exit 130 (its Exit from the
            # KeyboardInterrupt), and a SIGTERM reaches here as it was raised; the commands that say
            # more (train, bench, compare) exit with no cause
            if isinstance(getattr(err.__context__, "__cause__", None), KeyboardInterrupt):
                typer.echo("interrupted", err=True)
            elif isinstance(err, Terminated):
                typer.echo("terminated (SIGTERM)", err=True)
        raise


if __name__ == "__main__":
    main()
