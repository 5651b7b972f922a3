"""The run folder: everything ``evaluate`` and ``predict`` need, written atomically.

Layout::

    config.yaml         the resolved config (replayable with --config)
    model.json          task name, model hyperparameters, rnnkit and torch versions
    model.safetensors   weights (never pickle)
    <transform>.json    fitted preprocessing (text encoder, labels, scalers ...)
    metrics.json        final metrics;  history.csv  per-epoch figures
    report.md, *.png    the report and its plots;  train.log  the log
    inputs.json         the task, the training and dev data (absolute paths, sizes) for --resume
    checkpoint-best.safetensors   best weights so far;  checkpoint-last.ckpt  state after the last epoch
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from .. import __version__
from ..allocation import TooLarge, budget_for, build_within, file_bytes, too_large_message
from ..runtime import atomic_write_bytes

M = TypeVar("M")

REQUIRED = ("config.yaml", "model.json", "model.safetensors")
# config keys ``rnnkit train --resume`` may change: how long to train on, not what is trained
RESUME_KEYS = ("train.epochs", "train.max_minutes", "train.patience")


def _absolute(path: str | tuple[str, ...] | None) -> Any:
    """Data arguments with every existing path made absolute (``IMAGES,LABELS`` pairs and
    ``builtin:`` names kept as written)."""
    if path is None:
        return None
    if isinstance(path, tuple):
        return [_absolute(p) for p in path]
    parts = str(path).split(",")
    return ",".join(str(Path(part).resolve()) if Path(part).exists() else part for part in parts)


def data_fingerprint(path: str | tuple[str, ...] | list[str] | None) -> Any:
    """``[size, modification time]`` of each data file (a folder: the number, total size and latest
    modification time of the files in it and its subfolders), to tell whether a resumed run reads
    the data it started with."""
    if path is None:
        return None
    if isinstance(path, tuple | list):
        return [data_fingerprint(p) for p in path]
    out: list[Any] = []
    for part in str(path).split(","):
        q = Path(part)
        if q.is_file():
            st = q.stat()
            out.append([st.st_size, st.st_mtime_ns])
        elif q.is_dir():
            out.append(["folder", *_folder_fingerprint(q)])
        else:
            out.append(part)
    return out


def _folder_fingerprint(folder: Path) -> list[int]:
    """``[files, bytes, latest modification time]`` of everything under ``folder``, subfolders
    (class folders) and linked folders included, each folder once."""
    files = size = latest = 0
    seen: set[tuple[int, int]] = set()
    for parent, folders, names in os.walk(folder, followlinks=True):
        st = os.stat(parent)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        folders.sort()
        for name in names:
            try:
                st = os.stat(os.path.join(parent, name))
            except OSError:  # a broken link
                continue
            files, size, latest = files + 1, size + st.st_size, max(latest, st.st_mtime_ns)
    return [files, size, latest]


class RunError(ValueError):
    """A run folder is missing, incomplete or corrupt."""


def build_recorded(build: Callable[[], M], *, source: Path, weights: Path, fix: str,
                   error: type[ValueError] = RunError) -> M:
    """``build()``, the model that ``source`` (a run's model.json or config.yaml) describes, with its
    allocations held to what the weights file ``weights`` justifies (:func:`rnnkit.allocation.budget_for`
    its size on disk, read without loading it): an edited size (``hidden_size: 10000000``, a vocabulary
    of ``10**10``) is a one-line ``error`` before the memory is allocated, not an out-of-memory kill.
    """
    held = file_bytes(weights)
    try:
        return build_within(budget_for(held), build)
    except TooLarge as err:
        raise error(too_large_message(str(source), err, weights.name, held, fix)) from None


def unshared_tensors(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that alias an earlier one (tied weights) so safetensors can write them.

    Returns:
        ``(tensors, aliases)`` where ``aliases`` maps each dropped name to the kept name.
    """
    kept: dict[tuple[Any, ...], str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr() + tensor.storage_offset() * tensor.element_size(),
               tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and key in kept:
            aliases[name] = kept[key]
            continue
        kept[key] = name
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors, aliases


def _check_config(path: Path) -> None:
    """A run's ``config.yaml`` must be readable YAML holding config sections, or a one-line error."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: absurd nesting
        raise RunError(f"{path} is corrupt ({err.__class__.__name__}); restore it or train again") from None
    except OSError as err:
        raise RunError(f"{path} cannot be read ({err.strerror or err}); make it readable and try again") from None
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, dict) for v in loaded.values()):
        raise RunError(f"{path} is corrupt (not a mapping of config sections such as data:, model:, train:); "
                       "restore it or train again")


class RunDir:
    """A run folder being written (training) or read (evaluate, predict)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, task: str, name: str | None = None, *, exist_ok: bool = True) -> RunDir:
        """A new folder ``root/<task>-<n>`` (or ``root/name``; with ``exist_ok=False``, as ``rnnkit
        train --name`` asks, that folder must not exist yet).

        Raises:
            RunError: ``root`` is a file, ``root/name`` exists (``exist_ok=False``), or a folder cannot
                be made there.
        """
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise RunError(f"--out {root} is a file, not a folder; give a folder for the run folders (e.g. runs)")
        try:
            root.mkdir(parents=True, exist_ok=True)
            if name is None:  # the next free number, claimed by mkdir itself: two runs started together
                n = 1        # (two processes, one --out) get two folders, never one shared
                while True:
                    while (root / f"{task}-{n}").exists():
                        n += 1
                    try:
                        (root / f"{task}-{n}").mkdir()
                        break
                    except FileExistsError:  # taken between the check and the mkdir
                        n += 1
                name = f"{task}-{n}"
                path = root / name
            else:
                path = root / name
                path.mkdir(parents=True, exist_ok=exist_ok)
        except FileExistsError:
            raise RunError(f"run folder {root / str(name)} already exists; choose another --name, or remove that "
                           "folder first") from None
        except OSError as err:
            raise RunError(f"cannot make a run folder in {root} ({err.strerror or err}); give another --out") from None
        return cls(path)

    def has_weights(self) -> bool:
        """Whether training wrote weights here (a best-so-far checkpoint, the final model, or a
        checkpoint to resume from, which a long first epoch writes before any dev score)."""
        return any(self.file(name).is_file()
                   for name in ("checkpoint-best.safetensors", "model.safetensors", "checkpoint-last.ckpt"))

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing, complete run folder (one-line errors otherwise)."""
        p = Path(path)
        if not p.is_dir():
            raise RunError(f"run folder not found: {p} (pass the folder printed by 'rnnkit train')")
        missing = [name for name in REQUIRED if not (p / name).is_file()]
        if missing:
            raise RunError(f"run folder {p} is incomplete: missing {', '.join(missing)} "
                           "(training was interrupted or files were removed; train again)")
        _check_config(p / "config.yaml")
        return cls(p)

    @classmethod
    def open_task(cls, path: str | Path, task: str) -> tuple[RunDir, dict[str, Any]]:
        """An existing run folder of ``task`` and its ``model.json`` (one-line errors otherwise)."""
        run = cls.open(path)
        meta = run.read_json("model.json")
        if meta.get("task") != task:
            raise RunError(f"{run.path} holds a {meta.get('task')!r} model, not {task!r}")
        return run, meta

    def file(self, name: str) -> Path:
        return self.path / name

    def build_model(self, meta: dict[str, Any], build: Callable[[dict[str, Any]], M]) -> M:
        """``build(hyperparameters)``: the model ``model.json`` (``meta``) describes, rebuilt from its
        recorded hyperparameters before :meth:`load_into` gives it its weights.

        Construction runs under an allocation budget from the size of ``model.safetensors``
        (:func:`build_recorded`), so an edited size is refused before it is allocated; missing or
        wrong hyperparameters are a one-line :class:`RunError` too.
        """
        source = self.file("model.json")
        hyper = meta.get("hyperparameters")
        try:
            if not isinstance(hyper, dict):
                raise ValueError("no hyperparameters")
            return build_recorded(lambda: build(hyper), source=source, weights=self.file("model.safetensors"),
                                  fix="train again")
        except RunError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, OverflowError,
                MemoryError) as err:
            text = " ".join(str(err).split()).split(" Exception raised from")[0] or type(err).__name__
            detail = f"no {err}" if isinstance(err, KeyError) else text  # (torch's C++ trace cut off)
            raise RunError(f"{source} is corrupt or from another rnnkit version ({detail[:200]}); "
                           "train again") from None

    def record_inputs(self, task: str, train: str | tuple[str, ...], dev: str | tuple[str, ...] | None) -> None:
        """Write ``inputs.json``: the task and its data, as ``--resume`` finds them again."""
        self.write_json("inputs.json", {"task": task, "train": _absolute(train), "dev": _absolute(dev),
                                        "fingerprint": {"train": data_fingerprint(train),
                                                        "dev": data_fingerprint(dev)}})

    @classmethod
    def for_resume(cls, path: str | Path, task: str, train: str | tuple[str, ...] | None = None,
                   dev: str | tuple[str, ...] | None = None) -> tuple[RunDir, Any, Any]:
        """An interrupted (or finished) run folder of ``task`` to continue, and its training and dev data:
        the recorded ones, or ``train``/``dev`` when given, which must hold the same data (sizes and
        modification times)."""
        from .engine import LAST_CHECKPOINT

        p = Path(path)
        if not p.is_dir():
            raise RunError(f"--resume {p}: run folder not found (pass the folder printed by 'rnnkit train')")
        run = cls(p)
        if not run.file("inputs.json").is_file():
            raise RunError(f"--resume {p}: no inputs.json (runs written before rnnkit recorded their data cannot be "
                           "resumed); train a new run")
        inputs = run.read_json("inputs.json")
        if inputs.get("task") != task:
            raise RunError(f"--resume {p}: this run trains {inputs.get('task')!r}, not {task!r}; run "
                           f"'rnnkit train {inputs.get('task')} --resume {p}'")
        if not run.file(LAST_CHECKPOINT).is_file() and (run.file("history.csv").is_file()
                                                         or run.file("model.safetensors").is_file()):
            raise RunError(f"--resume {p}: no {LAST_CHECKPOINT}, though epochs finished (it was deleted or moved); "
                           f"put it back in {p}, or train a new run")
        if not run.file(LAST_CHECKPOINT).is_file():
            raise RunError(f"--resume {p}: no {LAST_CHECKPOINT} (it is written after each finished epoch, so the "
                           "run stopped during its first one); train a new run")
        _check_config(run.file("config.yaml"))
        chosen = []
        for role, given in (("train", train), ("dev", dev)):
            recorded = inputs.get(role)
            if isinstance(recorded, list):
                recorded = tuple(recorded)
            use = given if given is not None else recorded
            if use is not None and data_fingerprint(use) != inputs.get("fingerprint", {}).get(role):
                what = "--train" if role == "train" else "--dev"
                parts = [str(q) for q in (use if isinstance(use, tuple) else (use,))]
                gone = [q for part in parts for q in part.split(",") if not Path(q).exists()]
                if gone:  # not "different data": no data at all
                    raise RunError(f"--resume {p}: the {role} data {gone[0]} the run started with is not found (moved "
                                   f"or deleted); put it back, or give its new path with {what}")
                raise RunError(f"--resume {p}: the {role} data {use} differ from the ones the run started with "
                               f"(size or modification time); give the same data with {what}, or train a new run")
            chosen.append(use)
        return run, chosen[0], chosen[1]

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_bytes(self.file(name), text.encode("utf-8"))
        return self.file(name)

    def write_json(self, name: str, data: Any) -> Path:
        return self.write_text(name, json.dumps(data, indent=2, sort_keys=False) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        """The JSON object in the run file ``name`` (every run file holds one), or a one-line :class:`RunError`."""
        p = self.file(name)
        if not p.is_file():
            raise RunError(f"run folder {self.path} is incomplete: missing {name}")
        try:
            loaded = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: absurd nesting
            raise RunError(f"{p} is corrupt ({err.__class__.__name__}); train again") from None
        except OSError as err:
            raise RunError(f"{p} cannot be read ({err.strerror or err}); make it readable and try again") from None
        if not isinstance(loaded, dict):
            raise RunError(f"{p} is corrupt (not a JSON object); train again")
        return loaded

    def save_model(self, model: nn.Module, task: str, hyperparameters: dict[str, Any]) -> None:
        from safetensors.torch import save

        tensors, aliases = unshared_tensors(model.state_dict())
        atomic_write_bytes(self.file("model.safetensors"), save(tensors))
        self.write_json("model.json", {"task": task, "hyperparameters": hyperparameters, "tied_weights": aliases,
                                       "rnnkit_version": __version__, "torch_version": torch.__version__})

    def load_state(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load

        p = self.file("model.safetensors")
        try:
            data = p.read_bytes()
        except OSError as err:
            raise RunError(f"{p} cannot be read ({err.strerror or err}); make it readable and try again") from None
        try:
            return load(data)
        except Exception as err:  # safetensors raises its own error types for bad headers
            raise RunError(f"{p} is corrupt or not a safetensors file ({str(err).splitlines()[0][:120]}); "
                           "train again") from None

    def load_into(self, model: nn.Module) -> nn.Module:
        state = self.load_state()
        tied = self.read_json("model.json").get("tied_weights", {})
        if not isinstance(tied, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
            raise RunError(f"{self.file('model.json')} is corrupt (tied_weights is not a mapping of weight names); "
                           "train again")
        for alias, name in tied.items():
            if name in state:
                state[alias] = state[name]
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise RunError(f"{self.file('model.safetensors')} does not match the model in model.json "
                           f"({str(err).splitlines()[0][:160]}); the run folder was mixed up or edited") from None
        return model.eval()
