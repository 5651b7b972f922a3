"""Saving and loading models: JSON config + safetensors weights, nothing pickled.

Layouts:

* **folder** (any path not ending in ``.safetensors``): ``config.json`` (architecture, compile
  settings, versions), ``model.safetensors`` (the ``state_dict``) and ``optimizer.safetensors``
  (the optimizer state, as Keras 3 saves it: by default for a trained model whose compile settings
  are saved; ``include_optimizer=True`` requires it, ``False`` leaves it out);
* **single file** (``*.safetensors``): the weights, with the same JSON config stored in the
  file's metadata under ``rnnkit_config``.

Every file is written under a temporary name in the same folder and moved over the target
with ``os.replace``, so readers never see a half-written file. Loading never calls
``torch.load``. The config records a SHA-256 of the weights (``weights_sha256``), so damaged
weights are refused rather than loaded; an optimizer file records the optimizer class and the
parameter shapes it was saved for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import __version__
from ..allocation import AllocationBudget, TooLarge, budget_for, too_large_message
from ..layers.base import LAYERS, deserialize_layer, serialize_layer
from ..runtime import new_file_mode

FORMAT = "rnnkit.model"
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, OPTIMIZER_NAME = "config.json", "model.safetensors", "optimizer.safetensors"


def _write_error(path: str, err: BaseException) -> OSError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return OSError(f"cannot write {path}: {reason}; save to a folder you can write to")


def make_folder(path: str) -> None:
    """``os.makedirs(path, exist_ok=True)`` with a one-line error naming ``path``."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise _write_error(path, err) from None


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then move it over ``path``.

    The file gets the usual permissions (``0o666`` less the umask), whatever ``write`` used.

    Raises:
        OSError: one line naming ``path`` when it cannot be written (missing or read-only folder).
    """
    folder = os.path.dirname(os.path.abspath(path))
    make_folder(folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())  # safetensors writes 0o600 files
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:
        raise _write_error(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _corrupt(path: str, err: BaseException) -> ValueError:
    detail = str(err).splitlines()[0] if str(err) else type(err).__name__
    return ValueError(f"{path} is not a readable rnnkit save ({detail}): the file is damaged or not an rnnkit "
                      "model; save the model again")


def _foreign(path: str) -> ValueError | None:
    """A one-line error for a file in another library's format (told by its first bytes), else None."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return ValueError(f"{path} is a Python pickle, which rnnkit never loads (unpickling can run code); rnnkit "
                          "saves are JSON + safetensors: save the model with model.save()")
    if head.startswith(b"PK\x03\x04"):
        kind = "a zip archive (a Keras .keras file or a torch.save checkpoint)"
    elif head.startswith(b"\x89HDF\r\n\x1a\n"):
        kind = "an HDF5 file (a Keras .h5 / .weights.h5 file)"
    else:
        return None
    return ValueError(f"{path} is {kind}, not an rnnkit save (rnnkit reads only its own JSON + safetensors "
                      "files); to import Keras weights, load the model in Keras, build the same architecture "
                      "here and call model.set_weights(keras_model.get_weights())")


def _load_tensors(path: str) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with one-line errors for missing or corrupt files."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no weights file at {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise _foreign(path) or _corrupt(path, err) from None


def weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_digest(config: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> None:
    expected = config.get("weights_sha256")
    if expected is not None and weights_digest(tensors) != expected:
        raise ValueError(f"{source} is not a readable rnnkit save (its weights do not match the checksum saved with "
                         "the config): the file is damaged or was replaced; save the model again (to load other "
                         "weights into this architecture, use model.load_weights(file))")


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _is_file_path(path: str) -> bool:
    return path.endswith(".safetensors")


def _compile_config(model: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The compile settings as JSON, or ``(None, why)`` when they cannot be saved."""
    compiled = getattr(model, "compiled", None)
    if compiled is None:
        return None, None
    try:
        compiled.resolve(list(model.output_names))
        return compiled.get_config(), None
    except ValueError as err:  # custom losses/metrics, torch optimizer classes, schedule functions
        return None, str(err).splitlines()[0]


def model_config(model: Any) -> dict[str, Any]:
    """The JSON document saved beside the weights."""
    compile_config, _ = _compile_config(model)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "rnnkit_version": __version__,
              "torch_version": torch.__version__, "model": serialize_layer(model), "compile": compile_config}
    build_inputs = model.__dict__.get("_build_inputs")
    if build_inputs is not None:  # a subclassed model: its layers are built on load by a call like its first
        config["build_inputs"] = build_inputs
    return config


def _optimizer_tensors(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    compiled = getattr(model, "compiled", None)
    opt = None if compiled is None else compiled.optimizer.torch_optimizer
    if opt is None or compiled is None or not (compiled.optimizer.calls or opt.state):  # no step taken yet
        return None
    state = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{idx}.{name}"] = value
    shapes = [list(p.shape) for group in opt.param_groups for p in group["params"]]
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars,
                     "iterations": int(compiled.optimizer.calls),  # the call count (see _load_optimizer)
                     "optimizer_class": type(opt).__name__,
                     "param_shapes": shapes, "tensors_sha256": weights_digest(tensors)}


def save_model(model: Any, filepath: str | os.PathLike[str], *, overwrite: bool = True,
               include_optimizer: bool | None = None) -> None:
    """Save architecture, weights and compile settings (see the module docstring).

    ``include_optimizer``: ``None`` (default) saves the optimizer state, as Keras 3 does, where it
    can be restored: a folder save of a model trained with saved compile settings (a single file, an
    untrained or uncompiled model, or a ``TorchOptimizer`` leave it out); ``True`` requires it (a
    one-line error where it cannot be saved); ``False`` leaves it out (a smaller folder to deploy).

    Raises:
        FileExistsError: if the target exists and ``overwrite`` is false.
        ValueError: for a model whose config cannot be saved (subclassed without ``get_config``).
    """
    path = os.fspath(filepath)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    try:
        config = model_config(model)
    except NotImplementedError as err:
        raise ValueError(str(err)) from None
    _, unsaved = _compile_config(model)
    if include_optimizer is None:  # Keras 3's default, where the state can be restored
        include_optimizer = unsaved is None and not _is_file_path(path) and _optimizer_tensors(model) is not None
    if unsaved is not None:
        if include_optimizer:
            raise ValueError(f"include_optimizer=True but the compile settings cannot be saved ({unsaved}), so the "
                             "optimizer state could not be restored; compile with rnnkit optimizer, loss and metric "
                             "names or objects, or save without include_optimizer")
        warnings.warn(f"{path}: the compile settings are not saved ({unsaved}); the loaded model predicts as "
                      "this one but needs compile() again before it trains", stacklevel=3)
    tensors = _tensors(model)
    config["weights_sha256"] = weights_digest(tensors)
    if _is_file_path(path):
        if include_optimizer:
            raise ValueError("include_optimizer=True needs a folder save (a path not ending in .safetensors)")
        metadata = {"rnnkit_config": json.dumps(config), "format": "pt"}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        return
    if os.path.isfile(path):
        raise ValueError(f"{path} is a file; save to a folder path or a path ending in .safetensors")
    make_folder(path)
    atomic_write(os.path.join(path, WEIGHTS_NAME), lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    optimizer_file = os.path.join(path, OPTIMIZER_NAME)
    if include_optimizer:
        opt = _optimizer_tensors(model)
        if opt is None:
            raise ValueError("include_optimizer=True but the model has no optimizer state yet (compile and fit first)")
        opt_tensors, meta = opt
        atomic_write(optimizer_file, lambda tmp: save_file(opt_tensors, tmp, metadata={"rnnkit_optimizer": json.dumps(meta)}))
    elif os.path.exists(optimizer_file):
        os.remove(optimizer_file)

    def write_config(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
    atomic_write(os.path.join(path, CONFIG_NAME), write_config)


def _read(path: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if os.path.isdir(path):
        config_file, weights_file = os.path.join(path, CONFIG_NAME), os.path.join(path, WEIGHTS_NAME)
        for name, file in ((CONFIG_NAME, config_file), (WEIGHTS_NAME, weights_file)):
            if not os.path.isfile(file):
                raise FileNotFoundError(f"{path} is not a saved rnnkit model: {name} is missing")
        try:
            with open(config_file, encoding="utf-8") as f:
                config = json.load(f)
        except (ValueError, OSError, RecursionError) as err:  # RecursionError: absurdly deep nesting
            raise _corrupt(config_file, err) from None
        if not isinstance(config, dict):
            raise _corrupt(config_file, ValueError("the config is not a JSON object"))
        tensors = _load_tensors(weights_file)
        _check_digest(config, tensors, weights_file)
        return config, tensors
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no saved model at {path}")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise _foreign(path) or _corrupt(path, err) from None
    if "rnnkit_config" not in metadata:
        raise ValueError(f"{path} holds weights only (no model config); build the model and call load_weights()")
    try:
        config = json.loads(metadata["rnnkit_config"])
    except (ValueError, RecursionError) as err:  # RecursionError: absurdly deep nesting
        raise _corrupt(path, err) from None
    if not isinstance(config, dict):
        raise _corrupt(path, ValueError("the config is not a JSON object"))
    tensors = _load_tensors(path)
    _check_digest(config, tensors, path)
    return config, tensors


def _weight_bytes(tensors: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _too_large(config_file: str, err: TooLarge, tensors: dict[str, torch.Tensor]) -> ValueError:
    return ValueError(too_large_message(config_file, err, "its weights file", _weight_bytes(tensors),
                                        "save the model again"))


@contextlib.contextmanager
def custom_object_scope(custom_objects: dict[str, Any] | None) -> Iterator[None]:
    """Make ``custom_objects`` (layer classes by name) known to every ``from_config`` inside.

    Nested models and wrappers (``Bidirectional``, ``TimeDistributed``) look their layers up by
    name too, so the classes are registered for the duration of the block and the registry is
    restored after it.
    """
    if not custom_objects:
        yield
        return
    saved = {name: LAYERS[name] for name in custom_objects if name in LAYERS}
    LAYERS.update(custom_objects)
    try:
        yield
    finally:
        for name in custom_objects:
            if name in saved:
                LAYERS[name] = saved[name]
            else:
                LAYERS.pop(name, None)


def load_model(filepath: str | os.PathLike[str], custom_objects: dict[str, Any] | None = None,
               compile: bool = True) -> Any:
    """Load a model saved with ``Model.save`` (folder or ``.safetensors`` file).

    Args:
        filepath: the folder or file.
        custom_objects: classes of custom layers by name.
        compile: restore the compile settings (and the optimizer state if it was saved).

    Returns:
        The model, with identical weights (its predictions match the saved model's exactly).
    """
    path = os.fspath(filepath)
    config, tensors = _read(path)
    config_file = os.path.join(path, CONFIG_NAME) if os.path.isdir(path) else path
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not an rnnkit model file (format {config.get('format')!r})")
    version = config.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _corrupt(config_file, ValueError(f"format_version {version!r} is not an integer"))
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer rnnkit (format {version}); upgrade rnnkit")
    if not isinstance(config.get("model"), dict):
        raise _corrupt(config_file, ValueError("the config has no model architecture"))
    budget = AllocationBudget(budget_for(_weight_bytes(tensors)))  # sizes in the config are checked before allocating
    try:
        with custom_object_scope(custom_objects), budget:
            model: Any = deserialize_layer(config["model"], custom_objects)
    except TooLarge as err:
        raise _too_large(config_file, err, tensors) from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError, OverflowError,
            RecursionError, MemoryError) as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, KeyError):
            detail = f"missing entry {detail}"
        elif isinstance(err, RecursionError):
            detail = "layers nested too deeply"
        raise ValueError(f"cannot rebuild the model in {config_file}: {detail}") from None
    build_inputs = config.get("build_inputs")
    if isinstance(build_inputs, dict) and not model.built and hasattr(model, "_build_from_record"):
        try:
            with budget:
                model._build_from_record(build_inputs)
        except TooLarge as err:
            raise _too_large(config_file, err, tensors) from None
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError, OverflowError,
                MemoryError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(f"cannot build the model in {config_file} on its recorded inputs: {detail}") from None
    _load_state(model, tensors, strict=True, source=path)
    if compile and config.get("compile"):
        from ..training.compile import CompileState

        try:
            model.compiled = CompileState.from_config(config["compile"])
            model.compiled.resolve(list(model.output_names))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            detail = str(err).splitlines()[0] if str(err) else type(err).__name__
            if isinstance(err, KeyError):
                detail = f"missing entry {detail}"
            raise ValueError(f"cannot restore the compile settings in {config_file}: {detail}; load the model with "
                             "compile=False and compile it again, or save it again") from None
        optimizer_file = os.path.join(path, OPTIMIZER_NAME)
        if os.path.isdir(path) and os.path.isfile(optimizer_file):
            _load_optimizer(model, optimizer_file)
    return model


def _load_state(model: Any, tensors: dict[str, torch.Tensor], *, strict: bool, source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    if strict and (missing or unexpected):
        hint = " (is the model built? call model.build(input_shape) or fit it first)" if unexpected and not own else ""
        raise ValueError(f"weights in {source} do not match the model: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}{hint}")
    for k, v in tensors.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            raise ValueError(f"weight {k!r} in {source} has shape {list(v.shape)}, the model has {list(own[k].shape)}")
    model.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=strict)


def _load_optimizer(model: Any, path: str) -> None:
    """Restore the optimizer state saved by ``include_optimizer=True`` (one-line errors naming ``path``)."""
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads((f.metadata() or {})["rnnkit_optimizer"])
    except (SafetensorError, OSError, KeyError, ValueError, RecursionError) as err:
        raise _corrupt(path, ValueError("no optimizer state") if isinstance(err, KeyError) else err) from None
    if not isinstance(meta, dict):
        raise _corrupt(path, ValueError("the optimizer state is not a JSON object"))
    tensors = _load_tensors(path)
    if meta.get("tensors_sha256") is not None and weights_digest(tensors) != meta["tensors_sha256"]:
        raise _corrupt(path, ValueError("its tensors do not match their checksum"))
    spec = model.compiled.optimizer
    opt = spec.build(model.parameters())
    saved_class, saved_shapes = meta.get("optimizer_class"), meta.get("param_shapes")
    if saved_class is not None and saved_class != type(opt).__name__:
        raise ValueError(f"{path} holds the state of a {saved_class} optimizer but the model is compiled with "
                         f"{type(opt).__name__}; the optimizer file belongs to another save")
    shapes = [list(p.shape) for group in opt.param_groups for p in group["params"]]
    if saved_shapes is not None and saved_shapes != shapes:
        raise ValueError(f"{path} holds optimizer state for parameters of other shapes than this model's "
                         f"({len(saved_shapes)} saved, {len(shapes)} here); the optimizer file belongs to another model")
    try:
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for key, value in meta["scalars"].items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        # the call count (Keras' "iteration" variable), which every save has held: optimizer.iterations is
        # it // gradient_accumulation_steps
        spec.calls = int(meta.get("iterations", 0))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as err:
        raise _corrupt(path, err) from None


def save_weights(model: Any, filepath: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write the ``state_dict`` to one safetensors file (atomically)."""
    path = os.fspath(filepath)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    tensors = _tensors(model)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))


def load_weights(model: Any, filepath: str | os.PathLike[str], *, strict: bool = True) -> None:
    """Load weights from a safetensors file or a saved model folder."""
    path = os.fspath(filepath)
    config: dict[str, Any] = {}
    if os.path.isdir(path):
        try:
            with open(os.path.join(path, CONFIG_NAME), encoding="utf-8") as f:
                loaded = json.load(f)
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError, RecursionError):
            config = {}  # weights alone are enough here; their checksum is checked when the config has one
        path = os.path.join(path, WEIGHTS_NAME)
    elif os.path.isfile(path):  # a single-file model save carries its config (and checksum) in its metadata
        with contextlib.suppress(SafetensorError, OSError, KeyError, ValueError, RecursionError):
            with safe_open(path, framework="pt") as f:
                loaded = json.loads((f.metadata() or {})["rnnkit_config"])
            config = loaded if isinstance(loaded, dict) else {}
    tensors = _load_tensors(path)
    _check_digest(config, tensors, path)
    _load_state(model, tensors, strict=strict, source=path)
