"""Files a user may have received from someone else: saved models, transforms, run folders and
training checkpoints load as data only, and damaged or hostile ones give one-line errors (no raw
tracebacks, no huge allocations, no code)."""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import signal
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from rnnkit.data.errors import DataError
from rnnkit.data.serialization import load_transform
from rnnkit.data.tokenizers import Tokenizer, WordTokenizer
from rnnkit.data.vocab import LabelEncoder, Vocabulary
from rnnkit.layers import LSTM, Dense, Embedding
from rnnkit.models import Sequential, load_model

_EXECUTED: list[str] = []


def _mark() -> str:  # what a hostile pickle calls when it is unpickled
    _EXECUTED.append("ran")
    return "ran"


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_mark, ())


def _saved(tmp_path: Path, name: str = "m") -> tuple[Path, dict[str, Any]]:
    model = Sequential([Embedding(10, 4), LSTM(3), Dense(2)])
    model.build((None, 5))
    model.compile("adam", "mse")
    path = tmp_path / name
    model.save(path)
    return path, json.loads((path / "config.json").read_text())


def _one_line(err: BaseException, *parts: str) -> None:
    text = str(err)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, text


# -- models ------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, key, value", [(1, "units", 10**12), (0, "input_dim", 10**10)])
def test_an_absurd_layer_size_in_a_config_is_refused_before_allocating(tmp_path, layer, key, value):
    path, cfg = _saved(tmp_path)
    cfg["model"]["config"]["layers"][layer]["config"][key] = value
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        load_model(path)
    _one_line(err.value, str(path / "config.json"), "far larger than its weights", "save the model again")


def test_a_config_asking_gigabytes_is_refused_before_they_are_allocated(tmp_path, monkeypatch):
    """A size the machine could allocate (gigabytes, filled by the initializers) is refused too: the
    budget is the weights file's size plus an allowance (made small here to keep the test small)."""
    from rnnkit import allocation

    monkeypatch.setattr(allocation, "BUILD_ALLOWANCE", 1 << 20)
    path, cfg = _saved(tmp_path)
    cfg["model"]["config"]["layers"][1]["config"]["units"] = 2000  # 4 * 2000 * 2000 floats: 64 MB
    (path / "config.json").write_text(json.dumps(cfg))
    allocated: list[int] = []
    real_empty = torch.empty

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real_empty(*args, **kwargs)
        allocated.append(out.numel())
        return out

    monkeypatch.setattr(torch, "empty", spy)
    with pytest.raises(ValueError, match="far larger than its weights"):
        load_model(path)
    assert max(allocated, default=0) < 4 * 2000 * 2000
    monkeypatch.undo()
    good, _ = _saved(tmp_path, "good")  # a valid model still loads under the budget
    assert load_model(good).count_params() > 0


@pytest.mark.parametrize("single_file", [False, True])
def test_a_deeply_nested_config_is_a_one_line_error(tmp_path, single_file):
    path, _ = _saved(tmp_path)
    deep = "[" * 100_000 + "]" * 100_000
    if single_file:
        from safetensors.torch import load_file

        target = tmp_path / "deep.safetensors"
        save_file(load_file(path / "model.safetensors"), target, metadata={"rnnkit_config": deep})
    else:
        (path / "config.json").write_text(deep)
        target = path / "config.json"
    with pytest.raises(ValueError) as err:
        load_model(target if single_file else path)
    _one_line(err.value, str(target), "not a readable rnnkit save")


@pytest.mark.parametrize("compile_config", [{"optimizer": "adam"}, 5, {"loss": 7, "optimizer": []}])
def test_damaged_compile_settings_are_a_one_line_error(tmp_path, compile_config):
    path, cfg = _saved(tmp_path)
    cfg["compile"] = compile_config
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as err:
        load_model(path)
    _one_line(err.value, str(path / "config.json"), "compile settings", "compile=False")
    assert load_model(path, compile=False).count_params() > 0


def test_a_damaged_optimizer_file_is_a_one_line_error(tmp_path):
    import numpy as np

    model = Sequential([Dense(2)])
    model.compile("adam", "mse")
    model.fit(np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, verbose=0)
    model.save(tmp_path / "m", include_optimizer=True)
    save_file({}, tmp_path / "m" / "optimizer.safetensors", metadata={"rnnkit_optimizer": "[1, 2]"})
    with pytest.raises(ValueError) as err:
        load_model(tmp_path / "m")
    _one_line(err.value, "optimizer.safetensors", "save the model again")


def test_pickles_zips_and_hdf5_are_refused_without_unpickling(tmp_path):
    pickled = tmp_path / "model.safetensors"
    pickled.write_bytes(pickle.dumps(_Evil(), protocol=4))
    with pytest.raises(ValueError, match="Python pickle, which rnnkit never loads"):
        load_model(pickled)
    torch.save({"x": _Evil()}, tmp_path / "ckpt.safetensors")
    with pytest.raises(ValueError, match="zip archive"):
        load_model(tmp_path / "ckpt.safetensors")
    (tmp_path / "w.safetensors").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match="HDF5"):
        load_model(tmp_path / "w.safetensors")
    assert not _EXECUTED


def test_layer_classes_and_activations_are_names_never_import_paths(tmp_path):
    path, cfg = _saved(tmp_path)
    for layer, key in ((2, "class_name"), (2, "activation")):
        changed = json.loads(json.dumps(cfg))
        if key == "class_name":
            changed["model"]["config"]["layers"][layer]["class_name"] = "os.system"
        else:
            changed["model"]["config"]["layers"][layer]["config"]["activation"] = "builtins.exec"
        (path / "config.json").write_text(json.dumps(changed))
        with pytest.raises(ValueError, match="unknown"):
            load_model(path)


def test_a_safetensors_header_claiming_huge_tensors_is_a_one_line_error(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**9, 10**9], "data_offsets": [0, 4]}}).encode()
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(ValueError) as err:
        load_model(path)
    _one_line(err.value, str(path), "not a readable rnnkit save")


# -- transforms ----------------------------------------------------------------------------------

def _doc(tmp_path: Path, content: Any, name: str = "t.json") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("content, message", [
    (b"\xff\xfe\x00{", "not UTF-8"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ({"type": "Vocabulary", "config": {}}, "missing entry 'tokens'"),
    ({"type": "Vocabulary", "config": [1]}, "not a JSON object"),
    ({"type": ["Vocabulary"], "config": {}}, "unknown transform type"),
    ({"type": "LabelEncoder", "config": {"classes": 3}}, "corrupt LabelEncoder config"),
    ({"type": "Tokenizer", "config": {}}, "abstract"),
    ({"type": "CharTokenizer", "config": {"evil": 1}}, "corrupt CharTokenizer config"),
    ({"type": "TextEncoder", "config": {"tokenizer": {"type": "CharTokenizer", "config": {}}}},
     "missing entry 'vocab'"),
])
def test_a_damaged_transform_file_is_a_one_line_data_error(tmp_path, content, message):
    path = _doc(tmp_path, content)
    with pytest.raises(DataError) as err:
        load_transform(path)
    _one_line(err.value, str(path), message, "fix:")


def test_a_vocabulary_whose_tokens_became_a_string_is_refused_not_split_into_characters(tmp_path):
    good = Vocabulary(["hello", "world"]).to_document()
    good["config"]["tokens"] = "hello"
    path = _doc(tmp_path, good)
    with pytest.raises(DataError, match="tokens is a str, not a list"):
        Vocabulary.load(path)
    labels = LabelEncoder(["a", "b"]).to_document()
    labels["config"]["classes"] = "ab"
    with pytest.raises(DataError, match="classes is a str, not a list"):
        LabelEncoder.load(_doc(tmp_path, labels, "labels.json"))


def test_a_damaged_subword_tokenizer_is_a_one_line_data_error(tmp_path):
    pytest.importorskip("tokenizers")
    doc = {"type": "SubwordTokenizer", "format_version": 1,
           "config": {"model": "bpe", "special_tokens": ["<pad>", "<unk>"], "tokenizer": {"x": 1}}}
    path = _doc(tmp_path, doc)
    with pytest.raises(DataError) as err:
        load_transform(path)
    _one_line(err.value, str(path), "corrupt SubwordTokenizer config")


def test_a_transform_save_that_fails_midway_keeps_the_previous_file(tmp_path):
    path = tmp_path / "vocab.json"
    Vocabulary(["a", "b"]).save(path)
    before = path.read_bytes()
    big = Vocabulary([f"token{i}" for i in range(3000)])
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # a full disk after 4 KB
    try:
        with pytest.raises(OSError):
            big.save(path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert path.read_bytes() == before
    assert Vocabulary.load(path) == Vocabulary(["a", "b"])
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temporary file left
    big.save(path)
    assert Vocabulary.load(path) == big and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_word_tokenizer_round_trips(tmp_path):
    tok = WordTokenizer(pattern=r"\w+")
    tok.save(tmp_path / "tok.json")
    assert Tokenizer.load(tmp_path / "tok.json") == tok


# -- run folders ---------------------------------------------------------------------------------

def _run_folder(tmp_path: Path) -> Path:
    from rnnkit.tasks.run import RunDir

    run = RunDir.create(tmp_path, "text-classification", "r")
    run.write_text("config.yaml", "data: {}\nmodel: {}\ntrain: {}\n")
    run.save_model(torch.nn.Linear(2, 2), "text-classification", {"hidden": 2})
    return run.path


@pytest.mark.parametrize("content", ["[1, 2]", "[" * 100_000 + "]" * 100_000, "\"text\""])
def test_a_damaged_model_json_is_a_one_line_run_error(tmp_path, content):
    from rnnkit.tasks.run import RunDir, RunError

    path = _run_folder(tmp_path)
    (path / "model.json").write_text(content)
    with pytest.raises(RunError) as err:
        RunDir.open_task(path, "text-classification")
    _one_line(err.value, str(path / "model.json"), "corrupt")


def test_damaged_tied_weights_are_a_one_line_run_error(tmp_path):
    from rnnkit.tasks.run import RunDir, RunError

    path = _run_folder(tmp_path)
    meta = json.loads((path / "model.json").read_text())
    for tied in ([["a", "b"]], {"weight": 3}):
        (path / "model.json").write_text(json.dumps({**meta, "tied_weights": tied}))
        with pytest.raises(RunError) as err:
            RunDir.open(path).load_into(torch.nn.Linear(2, 2))
        _one_line(err.value, "model.json", "tied_weights")
    (path / "model.json").write_text(json.dumps(meta))
    assert isinstance(RunDir.open(path).load_into(torch.nn.Linear(2, 2)), torch.nn.Linear)


def test_a_deeply_nested_config_yaml_is_a_one_line_run_error(tmp_path):
    from rnnkit.tasks.run import RunDir, RunError

    path = _run_folder(tmp_path)
    (path / "config.yaml").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(RunError) as err:
        RunDir.open(path)
    _one_line(err.value, str(path / "config.yaml"), "corrupt")


def test_run_files_are_replaced_not_written_through_links(tmp_path):
    """A received run folder whose files link outside it: resuming replaces the link, never the target."""
    from rnnkit.tasks.run import RunDir

    path = _run_folder(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (path / "train.log").symlink_to(outside)
    RunDir(path).write_text("train.log", "log\n")
    assert outside.read_text() == "keep me" and not (path / "train.log").is_symlink()


# -- training checkpoints ------------------------------------------------------------------------

def _track() -> dict[str, Any]:
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"history": [], "best": float("-inf"), "best_tie": float("-inf"), "bad_epochs": 0, "elapsed": 1.0,
            "average": None, "dataset_epoch": None, "stopped": None, "max_seconds": None, "task_state": None,
            "mid_epoch": None,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "numpy": [kind, torch.from_numpy(np.asarray(keys).copy()), int(pos), int(has_gauss),
                              float(gauss)], "cuda": []}}


def _checkpoint(tmp_path: Path, module: torch.nn.Module, **changes: Any) -> Path:
    track = {**_track(), **changes.pop("track", {})}
    for key in changes.pop("drop", ()):
        track.pop(key)
    saved = {"state_dict": dict(module.state_dict()), "optimizer_states": [{"state": {}, "param_groups": []}],
             "callbacks": {"Track": track}, **changes}
    path = tmp_path / "checkpoint-last.ckpt"
    torch.save(saved, path)
    return path


def test_a_well_formed_checkpoint_passes_the_check(tmp_path):
    from rnnkit.tasks.engine import _check_last_checkpoint

    module = torch.nn.Linear(2, 2)
    assert _check_last_checkpoint(_checkpoint(tmp_path, module), module) is None
    mid = {"batches": 3, "loss_sum": 1.5, "loss_count": 6, "epoch_seconds": 2.0}
    assert _check_last_checkpoint(_checkpoint(tmp_path, module, track={"mid_epoch": mid}), module) == mid


@pytest.mark.parametrize("changes, problem", [
    ({"drop": ["history"]}, "has no 'history'"),
    ({"track": {"rng": {"torch": 1}}}, "random-generator states"),
    ({"track": {"mid_epoch": {"batches": "x", "loss_sum": 0.0, "loss_count": 0, "epoch_seconds": 0.0}}},
     "mid-epoch position"),
    ({"track": {"history": "x"}}, "history"),
    ({"optimizer_states": [5]}, "optimizer states"),
    ({"state_dict": {"weight": 5, "bias": torch.zeros(2)}}, "other than tensors"),
])
def test_a_damaged_training_record_is_a_one_line_resume_error(tmp_path, changes, problem):
    from rnnkit.tasks.engine import ResumeError, _check_last_checkpoint

    module = torch.nn.Linear(2, 2)
    path = _checkpoint(tmp_path, module, **changes)
    with pytest.raises(ResumeError) as err:
        _check_last_checkpoint(path, module)
    _one_line(err.value, str(path), problem, "train a new run")


def test_a_hostile_checkpoint_is_never_unpickled(tmp_path, monkeypatch):
    """``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns torch's default into full unpickling: the checkpoint
    reader Lightning resumes through must not leave the choice to that default."""
    from rnnkit.tasks.engine import ResumeError, _check_last_checkpoint
    from rnnkit.training.checkpoint_io import DirectCheckpointIO

    path = tmp_path / "checkpoint-last.ckpt"
    torch.save({"state_dict": {}, "x": _Evil()}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(pickle.UnpicklingError):
        DirectCheckpointIO().load_checkpoint(path)
    with pytest.raises(ResumeError, match="is corrupt or truncated"):
        _check_last_checkpoint(path, torch.nn.Linear(2, 2))
    assert not _EXECUTED


def test_a_checkpoint_zip_with_a_damaged_member_is_refused(tmp_path):
    from rnnkit.tasks.engine import ResumeError, _check_last_checkpoint

    module = torch.nn.Linear(2, 2)
    path = _checkpoint(tmp_path, module)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    assert names
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ResumeError, match="corrupt or truncated"):
        _check_last_checkpoint(path, module)


def test_a_best_checkpoint_of_another_model_is_refused_when_resuming(tmp_path):
    import numpy as np
    from typer.testing import CliRunner

    from rnnkit.cli import app
    from rnnkit.datasets import load_digits

    images, labels = load_digits()
    np.savez(tmp_path / "digits.npz", x=images[:200], y=labels[:200])
    for name, hidden in (("r", 8), ("other", 16)):
        args = ["train", "image-classification", "--train", str(tmp_path / "digits.npz"), "--out", str(tmp_path),
                "--name", name, "--set", "train.epochs=1", "--set", f"model.hidden_size={hidden}", "--quiet"]
        assert CliRunner().invoke(app, args).exit_code == 0
    run, other = tmp_path / "r", tmp_path / "other"
    shutil.copy(other / "checkpoint-best.safetensors", run / "checkpoint-best.safetensors")
    result = CliRunner().invoke(app, ["train", "image-classification", "--resume", str(run), "--quiet",
                                      "--set", "train.epochs=2"])
    assert result.exit_code == 2, result.output
    assert "checkpoint-best.safetensors holds another model's weights" in result.output
    assert "Traceback" not in result.output


# -- Keras weight conversion -----------------------------------------------------------------------

def test_an_unknown_layer_kind_or_missing_parameters_are_value_errors():
    import numpy as np

    from rnnkit.layers.keras_weights import keras_to_torch, torch_to_keras

    with pytest.raises(ValueError, match="unknown recurrent layer kind 'conv'"):
        keras_to_torch("conv", [np.zeros((2, 4)), np.zeros((1, 4))], 1, use_bias=False)
    with pytest.raises(ValueError, match="lack weight_hh_l0"):
        torch_to_keras("lstm", {"weight_ih_l0": np.zeros((4, 2))})
    with pytest.raises(ValueError, match="lack bias_hh_l0"):
        torch_to_keras("gru", {"weight_ih_l0": np.zeros((3, 2)), "weight_hh_l0": np.zeros((3, 1)),
                               "bias_ih_l0": np.zeros(3)})
