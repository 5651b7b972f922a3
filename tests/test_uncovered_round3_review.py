"""Round-3 review of lines the default suite never ran: the Layer base class, rnnkit.nn wrappers,
task configs, the CLI, and the translation, text classification and speech tasks. Each branch is
reached from user input and checked for the right behaviour (Keras 3 with the torch backend for
Keras-API behaviour, hand computations otherwise), not merely run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from rnnkit import layers as L
from rnnkit.cli import app
from rnnkit.layers.base import Layer, _split_masks, automatic_mask, first_tensor

runner = CliRunner()


def keras_module() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras", reason="Keras 3 is the reference for these comparisons")
    if keras.backend.backend() != "torch":
        pytest.skip("these comparisons need KERAS_BACKEND=torch")
    return keras


def _error(result: Any) -> str:
    """The CLI's error: exit code 2, one line, no traceback (after a 'note: ... removed' line where a
    failed train removed its empty run folder)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [line for line in result.output.strip().splitlines() if not line.startswith("note: ")]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    return lines[0]


# -- layers/base.py --------------------------------------------------------------------------------
def test_first_tensor_of_a_structure_without_tensors_is_none_and_such_a_layer_still_builds_on_cpu() -> None:
    assert first_tensor([1.0, ("a", None)]) is None

    class Scale(Layer):
        def call(self, inputs: Any, mask: Any = None) -> Any:
            return torch.as_tensor(inputs, dtype=torch.float32) * 2

    layer = Scale()
    out = layer([1.0, 2.5])  # python numbers: no tensor to take a device from
    assert layer.built and torch.equal(out, torch.tensor([2.0, 5.0]))


def test_a_layer_built_on_a_non_cpu_input_moves_its_parameters_there() -> None:
    """maybe_build moves the new parameters to the input's device (checked with the meta device, which
    every machine has: a CUDA input takes the same branch)."""
    dense = L.Dense(3)
    out = dense(torch.ones(2, 4, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 3)
    assert all(p.device.type == "meta" for p in dense.parameters())


def test_automatic_mask_of_a_concrete_first_argument_is_none() -> None:
    """A layer called with a constant first argument and a symbolic keyword gets no automatic mask."""
    assert automatic_mask(torch.ones(2, 3), lambda s: torch.ones(2, dtype=torch.bool)) is None
    assert automatic_mask([], lambda s: None) is None


def test_compute_mask_with_the_wrong_number_of_masks_is_a_clear_error() -> None:
    assert _split_masks([torch.ones(1), torch.ones(1)], None) == [None, None]
    with pytest.raises(ValueError, match="compute_mask returned 3 masks for 2 outputs"):
        _split_masks([torch.ones(1), torch.ones(1)], [None, None, None])

    class TwoOut(Layer):
        def call(self, inputs: Any, mask: Any = None) -> Any:
            return [inputs, inputs * 2]

        def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
            return [None, None, None]

    with pytest.raises(ValueError, match="compute_mask returned 3 masks for 2 outputs"):
        TwoOut()(L.Input(shape=(3,)))


def test_a_call_whose_signature_cannot_be_read_is_given_the_mask() -> None:
    """``inspect.signature`` fails on a builtin ``call``: the layer passes ``mask`` (it cannot tell), so a
    builtin without one fails loudly instead of silently dropping a mask."""
    from rnnkit.layers.base import _takes_mask

    class Builtin(Layer):
        call = torch.abs  # type: ignore[assignment]

    assert _takes_mask(Builtin) is True
    with pytest.raises(TypeError, match="mask"):
        Builtin()(torch.ones(2))


def test_input_set_to_a_module_is_registered_and_can_be_deleted() -> None:
    class Holder(Layer):
        def __init__(self) -> None:
            super().__init__()
            self.input = nn.Linear(3, 2)  # PyTorch code names its first layer 'input'

        def call(self, inputs: Any, mask: Any = None) -> Any:
            return self.input(inputs)

    layer = Holder()
    assert "input" in layer._modules and "input" not in layer.__dict__
    assert len(list(layer.parameters())) == 2 and layer(torch.ones(1, 3)).shape == (1, 2)
    del layer.input
    assert "input" not in layer._modules and not list(layer.parameters())
    with pytest.raises(AttributeError, match="never been called on a symbolic tensor"):
        _ = layer.input
    layer.input = 5  # a plain value lives in __dict__; deleting it takes the other branch
    assert layer.input == 5
    del layer.input
    with pytest.raises(AttributeError):
        _ = layer.input


def test_deleting_input_or_output_that_the_layer_never_set_is_an_attribute_error_as_in_keras() -> None:
    """``del layer.input`` on a layer without its own 'input' recursed until RecursionError (the deleter
    handed it to nn.Module.__delattr__, which calls the deleter again); Keras raises AttributeError."""
    keras = keras_module()
    with pytest.raises(AttributeError):
        del keras.layers.Dense(2).input
    dense = L.Dense(2)
    with pytest.raises(AttributeError, match="'Dense' object has no attribute 'input'"):
        del dense.input
    with pytest.raises(AttributeError, match="'Dense' object has no attribute 'output'"):
        del dense.output


def test_the_base_layer_call_is_not_implemented_as_in_keras() -> None:
    keras = keras_module()
    with pytest.raises(NotImplementedError):
        keras.layers.Layer()(torch.ones(2, 3))
    with pytest.raises(NotImplementedError, match="Layer does not implement call"):
        Layer()(torch.ones(2, 3))


def test_a_value_error_on_the_first_example_is_the_layers_own_error() -> None:
    """Reshape of 4 values to 5: the first example run already fails, and the layer's own message (not
    the 'dynamic last dimension' one) reaches the user, as in Keras."""
    with pytest.raises(ValueError, match=r"cannot reshape .* to target_shape \(5,\)"):
        L.Reshape((5,))(L.Input(shape=(4,)))


def test_a_symbolic_keyword_without_a_positional_input_is_a_type_error() -> None:
    x = L.Input(shape=(3,))
    with pytest.raises(TypeError, match="Dense needs its input as the first positional argument"):
        L.Dense(2)(x=x)


def test_a_layer_that_returns_a_non_tensor_cannot_be_wired() -> None:
    class Nothing(Layer):
        def call(self, inputs: Any, mask: Any = None) -> Any:
            return None

    with pytest.raises(TypeError, match="Nothing returned NoneType; layers must return tensors"):
        Nothing()(L.Input(shape=(3,)))


def test_get_weights_of_plain_torch_modules_inside_a_layer_lists_each_parameter_once() -> None:
    """A plain nn.Module inside a Layer is walked for its parameters (torch layout, assignment order); a
    module shared by two containers is listed once, as ``parameters()`` counts it."""
    shared = nn.Linear(3, 2)

    class Wrapper(Layer):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Sequential(shared, nn.Tanh())
            self.second = nn.Sequential(shared)
            self.head = nn.Linear(2, 1)

        def call(self, inputs: Any, mask: Any = None) -> Any:
            return self.head(self.first(inputs)) + self.head(self.second(inputs))

    layer = Wrapper()
    layer(torch.ones(1, 3))
    weights = layer.get_weights()
    expected = [shared.weight, shared.bias, layer.head.weight, layer.head.bias]
    assert [w.shape for w in weights] == [tuple(p.shape) for p in expected]
    for w, p in zip(weights, expected):
        np.testing.assert_array_equal(w, p.detach().numpy())
    assert layer.count_params() == sum(w.size for w in weights) == 3 * 2 + 2 + 2 + 1
    new = [np.full(w.shape, k, dtype=np.float32) for k, w in enumerate(weights)]
    layer.set_weights(new)
    assert torch.all(shared.weight == 0) and torch.all(layer.head.bias == 3)


def test_a_layer_repr_names_it() -> None:
    assert repr(L.Dense(2, name="proj")) == "Dense(name='proj')"


# -- nn/wrappers.py --------------------------------------------------------------------------------
def test_bidirectional_refuses_lengths_and_mask_together_and_a_bidirectional_layer() -> None:
    from rnnkit.nn import GRU, Bidirectional

    bi = Bidirectional(GRU(3, 4, batch_first=True))
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="pass either lengths= or mask=, not both"):
        bi(x, lengths=torch.tensor([5, 3]), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="already has bidirectional=True"):
        Bidirectional(GRU(3, 4, batch_first=True, bidirectional=True))


def test_an_empty_stack_and_bad_hierarchical_arguments_are_one_line_errors() -> None:
    from rnnkit.nn import GRU, Hierarchical, Stack

    with pytest.raises(ValueError, match="Stack needs at least one layer"):
        Stack([])
    inner, outer = GRU(3, 4, batch_first=True), GRU(4, 5, batch_first=True)
    with pytest.raises(ValueError, match="pool must be 'last', 'mean', 'max' or a module, got 'sum'"):
        Hierarchical(inner, outer, pool="sum")
    h = Hierarchical(inner, outer)
    with pytest.raises(ValueError, match=r"expects input \[batch, segments, units, features\], got \[2, 6, 3\]"):
        h(torch.randn(2, 6, 3), torch.ones(2, 6))
    with pytest.raises(ValueError, match=r"unit_lengths must have shape \[2, 3\], got \[2\]"):
        h(torch.randn(2, 3, 4, 3), torch.tensor([1, 2]))


def test_hierarchical_segment_lengths_limit_the_outer_layer_to_the_first_segments() -> None:
    """With ``segment_lengths`` the outer layer reads only the first N segment vectors of each document
    (even where later segments have words): its outputs match running it on those alone."""
    from rnnkit.nn import GRU, Hierarchical

    torch.manual_seed(0)
    inner, outer = GRU(3, 4, batch_first=True), GRU(4, 5, batch_first=True)
    h = Hierarchical(inner, outer).eval()
    x = torch.randn(2, 3, 4, 3)
    unit_lengths = torch.tensor([[4, 2, 3], [1, 4, 2]])
    outputs, state, vectors = h(x, unit_lengths, segment_lengths=torch.tensor([2, 3]))
    # doc 0: the outer GRU over its first two segment vectors only
    ref_out, ref_h = outer(vectors[:1, :2])
    torch.testing.assert_close(outputs[0, :2], ref_out[0])
    torch.testing.assert_close(state[:, 0], ref_h[:, 0])
    ref_out1, ref_h1 = outer(vectors[1:])
    torch.testing.assert_close(outputs[1], ref_out1[0])
    torch.testing.assert_close(state[:, 1], ref_h1[:, 0])
    # each segment vector: the inner GRU's last state over that segment's real words
    _, hn = inner(x[0, 1:2, :2])
    torch.testing.assert_close(vectors[0, 1], hn[-1, 0])


def test_last_state_pooling_takes_a_two_dimensional_state_as_is() -> None:
    """An inner layer whose final state is already one vector per segment ([N, H]) is pooled as is."""
    from rnnkit.nn import GRU, Hierarchical, last_state_pooling

    h2 = torch.randn(3, 4)
    assert last_state_pooling(torch.zeros(3, 2, 4), h2, None) is h2

    class MeanRNN(nn.Module):
        batch_first = True

        def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            m = mask.unsqueeze(-1).float()
            return x, (x * m).sum(1) / m.sum(1).clamp(min=1)  # state [N, F]

    hier = Hierarchical(MeanRNN(), GRU(3, 2, batch_first=True))
    x = torch.randn(1, 2, 3, 3)
    _, _, vectors = hier(x, torch.tensor([[2, 3]]))
    torch.testing.assert_close(vectors[0, 0], x[0, 0, :2].mean(0))
    torch.testing.assert_close(vectors[0, 1], x[0, 1].mean(0))


# -- tasks/config.py -------------------------------------------------------------------------------
@dataclasses.dataclass
class _Inner:
    size: int


@dataclasses.dataclass
class _Custom:
    """Field types no shipped task config uses (a Literal that may be null, Any, a bool-like choice, a
    section without defaults): from_dict is generic, so they must still read right."""

    mode: Literal["fast", "slow"] | None = None
    switch: Literal["on", "off", "auto"] = "auto"
    anything: Any = None
    levels: list[float] = dataclasses.field(default_factory=lambda: [0.5])
    name: str = "x"
    inner: _Inner = dataclasses.field(default_factory=lambda: _Inner(1))


def _load_custom(text: str) -> _Custom:
    import yaml

    from rnnkit.tasks.config import _UniqueKeyLoader, from_dict

    return from_dict(_Custom, yaml.load(text, Loader=_UniqueKeyLoader))


def test_a_nullable_choice_names_the_choices_and_null() -> None:
    from rnnkit.tasks.config import ConfigError

    with pytest.raises(ConfigError, match=r"^mode: expected one of 'fast', 'slow' or null, got 'medium'$"):
        _load_custom("mode: medium")


def test_a_choice_yaml_reads_as_a_bool_keeps_its_text_and_any_is_taken_as_is() -> None:
    cfg = _load_custom("switch: off\nanything: [1, {a: 2}]")
    assert cfg.switch == "off"  # YAML 1.1 reads off as False: the text as written is the choice
    assert cfg.anything == [1, {"a": 2}]


def test_a_list_of_numbers_with_an_unreadable_item_names_it() -> None:
    """'0.1,[' from --set: YAML cannot read '[' as a number, so it stays text and is refused as one."""
    from rnnkit.tasks.config import ConfigError, _coerce, _number, parse_override

    assert _number("[") == "["
    path, value = parse_override("model.quantiles=0.1,[")
    assert path == ["model", "quantiles"] and value == "0.1,["
    with pytest.raises(ConfigError, match=r"^levels: expected a number, got '\['$"):
        _coerce(value, list[float], "levels")
    with pytest.raises(ConfigError, match=r"^levels: expected a list of numbers, got null$"):
        _load_custom("levels: null")


def test_a_yaml_date_for_a_string_key_is_its_text() -> None:
    """YAML reads 2024-01-31 as a date; a string option (a column name) takes it as written."""
    from rnnkit.tasks.config import load_config
    from rnnkit.tasks.text_classification import Config

    cfg = load_config(Config, overrides=["data.text_column=2024-01-31"])
    assert cfg.data.text_column == "2024-01-31"


def test_an_unknown_key_next_to_a_section_without_defaults_gets_no_suggestion() -> None:
    from rnnkit.tasks.config import ConfigError, _closest, from_dict

    @dataclasses.dataclass
    class NoDefaults:
        inner: _Inner

    assert _closest(NoDefaults, "zzz") is None
    with pytest.raises(ConfigError, match=r"^unknown key zzz; valid keys here: inner$"):
        from_dict(NoDefaults, {"zzz": 1})


def test_set_without_an_equals_sign_or_through_a_value_is_a_one_line_cli_error(tmp_path: Path) -> None:
    out = _error(runner.invoke(app, ["train", "text-classification", "--train", str(tmp_path / "x.csv"),
                                     "--set", "train.epochs"]))
    assert "override 'train.epochs' must look like key=value" in out
    out = _error(runner.invoke(app, ["train", "text-classification", "--train", str(tmp_path / "x.csv"),
                                     "--set", "train.epochs=3", "--set", "train.epochs.x=1"]))
    assert "override 'train.epochs.x=1': epochs is a value, not a section" in out


def test_an_override_yaml_cannot_read_is_taken_as_text() -> None:
    from rnnkit.tasks.config import load_config
    from rnnkit.tasks.text_classification import Config

    cfg = load_config(Config, overrides=["data.text_column=a: b: c"])
    assert cfg.data.text_column == "a: b: c"


def test_predict_set_with_a_non_data_key_names_the_keys_it_accepts() -> None:
    from rnnkit.tasks.config import ConfigError, reading_overrides
    from rnnkit.tasks.text_classification import DataConfig

    with pytest.raises(ConfigError, match=r"^predict --set accepts data\.\* keys only, got model$"):
        reading_overrides(DataConfig(), ["model.hidden_size=3"], ["text_column"], "predict --set")


# -- cli.py ----------------------------------------------------------------------------------------
def test_bench_memory_without_quiet_says_where_it_wrote(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", "memory", "--length", "4", "--cells", "rnn", "--budget-steps", "1",
                                 "--batch-size", "2", "--hidden-size", "2", "--memorize", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"written: {out}/memory.md, memory.json, memory.png" in result.output
    for name in ("memory.md", "memory.json", "memory.png"):
        assert (out / name).is_file()
    assert json.loads((out / "memory.json").read_text())


def test_closed_pipe_exits_1_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """main(): the reader went away (BrokenPipeError) -> exit status 1, stdout pointed at /dev/null."""
    import rnnkit.cli as cli

    def broken() -> None:
        raise BrokenPipeError

    monkeypatch.setattr(cli, "app", broken)
    monkeypatch.setenv("RNNKIT_REUSE_FREED_MEMORY", "0")  # no mallopt in the test process
    saved = os.dup(1)
    try:
        with pytest.raises(SystemExit) as info:
            cli.main()
        assert info.value.code == 1
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def test_python_dash_m_rnnkit_cli_runs_the_app() -> None:
    proc = subprocess.run([sys.executable, "-m", "rnnkit.cli", "version"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("rnnkit ") and "torch" in proc.stdout


# -- tasks/translation.py --------------------------------------------------------------------------
_TR_SMALL = ["data.vocab_size=40", "model.embedding_dim=8", "model.hidden_size=8", "model.dropout=0.0",
             "train.batch_size=16", "decode.beam_size=2", "train.epochs=1"]


def _write_pairs(folder: Path, name: str, n: int) -> list[str]:
    words = ["ka", "lu", "mi", "no", "pe"]
    src = [" ".join(words[(i + k) % 5] for k in range(2 + i % 3)) for i in range(n)]
    tgt = [" ".join(reversed(s.split())).upper() for s in src]
    (folder / f"{name}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return [str(folder / f"{name}.src"), str(folder / f"{name}.tgt")]


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sacrebleu")
    folder = tmp_path_factory.mktemp("round3_translation")
    args = ["train", "translation", "--train", *_write_pairs(folder, "train", 40), "--dev",
            *_write_pairs(folder, "dev", 6), "--out", str(folder), "--name", "toy", "--quiet"]
    for item in _TR_SMALL:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return folder / "toy"


@pytest.mark.parametrize("override, message", [
    ("model.decoder_layers=0", r"^model\.decoder_layers: must be >= 1, got 0$"),
    ("data.vocab_size=7", r"^data\.vocab_size: must be >= 8 \(4 special tokens plus subwords\), got 7$"),
    ("data.dev_fraction=1", r"^data\.dev_fraction: must be in \(0, 1\), got 1\.0$"),
])
def test_translation_config_limits_name_the_key(override: str, message: str) -> None:
    from rnnkit.tasks.config import ConfigError, load_config
    from rnnkit.tasks.translation import Config

    with pytest.raises(ConfigError, match=message):
        load_config(Config, overrides=[override])


def test_translation_ragged_tsv_is_warned_before_an_empty_dev_is_refused(tmp_path: Path) -> None:
    from rnnkit.tasks.config import ConfigError, load_config
    from rnnkit.tasks.run import RunDir
    from rnnkit.tasks.translation import Config, train

    pytest.importorskip("sacrebleu")
    (tmp_path / "tr.tsv").write_text("a b\tx y\nc d\tz w\ne f\tu\tv\n")
    (tmp_path / "dv.tsv").write_text("\t\n")
    logs: list[str] = []
    with pytest.raises(ConfigError, match=r"need at least 2 training pairs and 1 dev pair, got 3 \(.*tr\.tsv\) "
                                          r"and 0 \(.*dv\.tsv\); give more pairs"):
        train(load_config(Config), str(tmp_path / "tr.tsv"), str(tmp_path / "dv.tsv"), RunDir.create(tmp_path, "r"),
              log=logs.append, progress=False)
    assert any(m.startswith("warning: ") and "1 line(s) have another number of tab-separated fields" in m
               and "first line 3 (3)" in m for m in logs), logs


def test_pair_dataset_length_is_its_items() -> None:
    from rnnkit.tasks.translation import PairDataset

    assert len(PairDataset([([1], [2], 0), ([3], [4], 1)])) == 2


def test_translate_with_an_empty_file_is_a_one_line_error(translation_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = _error(runner.invoke(app, ["translate", str(translation_run), "--file", str(empty)]))
    assert f"nothing to translate: {empty} holds no sentences" in out
    out = _error(runner.invoke(app, ["translate", str(translation_run)]))
    assert "nothing to translate: give sentences as arguments or --file FILE" in out


def test_translate_nbest_above_the_beam_and_an_empty_attention_sentence(translation_run: Path) -> None:
    from rnnkit.tasks.translation import TrainedTranslator

    model = TrainedTranslator.load(translation_run)
    with pytest.raises(ValueError, match=r"^nbest \(3\) cannot exceed the beam size \(2\)$"):
        model.translate(["ka lu"], beam_size=2, nbest=3)
    out = _error(runner.invoke(app, ["translate", str(translation_run), "ka lu", "--beam", "2", "--nbest", "3"]))
    assert "nbest (3) cannot exceed the beam size (2)" in out
    with pytest.raises(ValueError, match="cannot plot attention for an empty sentence"):
        model.plot_attention("  ", "x.png")


def test_translation_evaluate_set_with_another_section_is_refused(translation_run: Path) -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.translation import TrainedTranslator

    model = TrainedTranslator.load(translation_run)
    with pytest.raises(ConfigError, match=r"evaluate --set accepts data\.\* and decode\.\* keys only, got \['model'\]"):
        model.evaluate("unused", ["model.hidden_size=4"])


def test_translation_run_with_a_corrupt_vocabulary_is_a_one_line_error(translation_run: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(translation_run, broken)
    (broken / "source_encoder.json").write_text("{not json")
    out = _error(runner.invoke(app, ["translate", str(broken), "ka lu"]))
    assert "subword vocabularies are missing or corrupt" in out and "train again" in out


# -- tasks/text_classification.py ------------------------------------------------------------------
_TC_FAST = ["--set", "train.epochs=1", "--set", "model.hidden_size=4", "--set", "model.embedding_dim=4",
            "--set", "data.min_freq=1", "--quiet"]
_TC_WORDS = {"pos": ["great", "fine", "good"], "neg": ["bad", "dull", "awful"]}


def _tc_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def _tc_rows(n: int, offset: int = 0) -> list[tuple[str, str]]:
    rows = []
    for i in range(offset, offset + n):
        label = "pos" if i % 2 else "neg"
        words = _TC_WORDS[label]
        rows.append((f"the film was {words[i % 3]}. it was {words[(i + 1) % 3]} indeed.", label))
    return rows


@pytest.fixture(scope="module")
def han_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("round3_han")
    train = _tc_csv(root / "train.csv", _tc_rows(24))
    dev = _tc_csv(root / "dev.csv", _tc_rows(6, 100))
    result = runner.invoke(app, ["train", "text-classification", "--train", str(train), "--dev", str(dev), "--out",
                                 str(root), "--name", "han", "--set", "model.architecture=han", *_TC_FAST])
    assert result.exit_code == 0, result.output
    return root / "han"


@pytest.mark.parametrize("override, message", [
    ("data.dev_fraction=0", r"^data\.dev_fraction: must be in \(0, 1\), got 0\.0$"),
    ("train.learning_rate=0", r"^train\.learning_rate: must be > 0, got 0\.0$"),
])
def test_text_classification_config_limits(override: str, message: str) -> None:
    from rnnkit.tasks.config import ConfigError, load_config
    from rnnkit.tasks.text_classification import Config

    with pytest.raises(ConfigError, match=message):
        load_config(Config, overrides=[override])


def test_han_word_attention_weights_sum_to_one_over_each_sentences_real_words() -> None:
    from rnnkit.nn import AttentionPooling
    from rnnkit.tasks.text_classification import HierarchicalAttentionNetwork

    model = HierarchicalAttentionNetwork(20, 2, embedding_dim=4, hidden_size=3, dropout=0.0).eval()
    assert isinstance(model.word_attention, AttentionPooling) and model.word_attention is model.encoder.pool
    ids = torch.randint(1, 20, (2, 3, 4))
    lengths = torch.tensor([[4, 2, 0], [1, 3, 2]])
    model(ids, lengths)
    w = model.word_attention.last_weights.view(2, 3, 4)
    real = torch.arange(4) < lengths.unsqueeze(-1)
    assert torch.all(w[~real] == 0)
    sums = w.sum(-1)
    torch.testing.assert_close(sums[lengths > 0], torch.ones(int((lengths > 0).sum())))


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_char_and_subword_tokenizers_fit_on_the_training_texts(tokenizer: str) -> None:
    from rnnkit.tasks.text_classification import DataConfig, Preprocessor

    texts = [t for t, _ in _tc_rows(20)]
    cfg = DataConfig(tokenizer=tokenizer, vocab_size=40 if tokenizer == "bpe" else 30000, min_freq=1)
    prep = Preprocessor.fit(texts, [[lab] for _, lab in _tc_rows(20)], cfg, "rnn", False)
    assert prep.encoder.vocab_size > 4
    if tokenizer == "char":  # every character of the texts has an id, and a text encodes one id per character
        assert prep.encoder.vocab_size == 4 + len(set("".join(texts)))
        assert len(prep.encoder.encode("great")) == 5
    else:
        assert prep.encoder.vocab_size <= 40
        ids = prep.encoder.encode(texts[0])
        assert 0 < len(ids) < len(texts[0].split()) * 4


def test_truncation_note_before_any_text_is_empty() -> None:
    from rnnkit.tasks.text_classification import DataConfig, Preprocessor

    prep = Preprocessor.fit(["a b", "c"], [["x"], ["y"]], DataConfig(min_freq=1), "rnn", False)
    assert prep.truncation_note() == ""


def test_incomplete_or_foreign_preprocessing_is_a_one_line_error(han_run: Path, tmp_path: Path) -> None:
    import shutil

    missing = tmp_path / "missing"
    shutil.copytree(han_run, missing)
    (missing / "labels.json").unlink()
    out = _error(runner.invoke(app, ["predict", str(missing), "good film"]))
    assert "is incomplete: missing labels.json; train again" in out
    foreign = tmp_path / "foreign"
    shutil.copytree(han_run, foreign)
    meta = json.loads((foreign / "preprocessing.json").read_text())
    meta["architecture"] = "cnn"
    (foreign / "preprocessing.json").write_text(json.dumps(meta))
    out = _error(runner.invoke(app, ["predict", str(foreign), "good film"]))
    assert "architecture 'cnn'" in out and "train again" in out


def test_diagnose_refuses_a_han_run_in_one_line(han_run: Path, tmp_path: Path) -> None:
    from rnnkit.tasks.text_classification import TrainedTextClassifier

    model = TrainedTextClassifier.load(han_run)
    with pytest.raises(ValueError, match="diagnose needs a single-label text classifier with model.architecture=rnn"):
        model.diagnostic_batch(han_run.parent / "dev.csv")


def test_predict_file_errors_and_a_format_override(han_run: Path, tmp_path: Path) -> None:
    from rnnkit.tasks.text_classification import TrainedTextClassifier

    out = _error(runner.invoke(app, ["predict", str(han_run), "--file", str(tmp_path / "nope.txt")]))
    assert "input file not found" in out and "nope.txt" in out
    archive = tmp_path / "classes.tar.gz"
    archive.write_bytes(b"")
    out = _error(runner.invoke(app, ["predict", str(han_run), "--file", str(archive)]))
    assert "use 'rnnkit evaluate RUN --data' instead" in out
    # data.format=tsv: a file named .txt is read as TSV by its text column, not line by line
    tsv = tmp_path / "texts.txt"
    tsv.write_text("id\ttext\n1\tgreat film\n2\tawful film\n")
    model = TrainedTextClassifier.load(han_run)
    assert [t for t, _ in model.texts_of_file(tsv)] == ["id\ttext", "1\tgreat film", "2\tawful film"]
    model.use_overrides(["data.format=tsv"])
    assert model.file_format == "tsv"
    assert [t for t, _ in model.texts_of_file(tsv)] == ["great film", "awful film"]


def test_training_data_too_small_or_empty_dev_names_the_file(tmp_path: Path) -> None:
    from rnnkit.tasks.config import ConfigError, load_config
    from rnnkit.tasks.run import RunDir
    from rnnkit.tasks.text_classification import Config, train

    cfg = load_config(Config, overrides=["data.min_freq=1"])
    one = _tc_csv(tmp_path / "one.csv", [("good film", "pos")])
    dev = _tc_csv(tmp_path / "dev.csv", [("bad film", "neg"), ("   ", "pos")])
    logs: list[str] = []
    with pytest.raises(ConfigError, match=r"one\.csv: need at least 2 training texts, found 1$"):
        train(cfg, one, dev, RunDir.create(tmp_path, "a"), log=logs.append, progress=False)
    assert any(m.startswith("note: ") and "dev.csv: left out 1 record whose text is empty" in m for m in logs), logs
    two = _tc_csv(tmp_path / "two.csv", [("good film", "pos"), ("bad film", "neg")])
    blank = _tc_csv(tmp_path / "blank.csv", [("  ", "pos")])
    with pytest.raises(ConfigError, match=r"blank\.csv: the dev data holds no texts$"):
        train(cfg, two, blank, RunDir.create(tmp_path, "b"), log=logs.append, progress=False)


def test_split_dev_with_one_text_per_label_still_holds_one_out() -> None:
    """Every label has a single text: one is held out anyway (seeded), so training names the unseen label."""
    from rnnkit.tasks.text_classification import DataConfig, _split_dev, read_examples  # noqa: F401

    class Ex:
        def __init__(self, text: str, label: str) -> None:
            self.text, self.label = text, label

    examples = [Ex("a", "x"), Ex("b", "y"), Ex("c", "z")]
    train_part, dev = _split_dev(examples, 0.1, 0)
    assert len(dev) == 1 and len(train_part) == 2
    assert {e.text for e in train_part} | {e.text for e in dev} == {"a", "b", "c"}
    order = torch.randperm(3, generator=torch.Generator().manual_seed(0)).tolist()
    assert dev[0] is examples[order[0]]


def test_training_with_one_text_per_label_and_no_dev_is_a_one_line_error(tmp_path: Path) -> None:
    data = _tc_csv(tmp_path / "three.csv", [("good film", "pos"), ("bad film", "neg"), ("odd film", "meh")])
    """Every label has one text and no --dev: the held-out text's label is unseen in training. The error
    said the label 'appears in dev data', which the user never gave; it now says the text was held out
    and how to fix it."""
    out = _error(runner.invoke(app, ["train", "text-classification", "--train", str(data), "--out",
                                     str(tmp_path / "r"), *_TC_FAST]))
    assert "appears in dev data" not in out
    assert "has no text left for training: no --dev was given, so this text was held out" in out
    assert "give a dev set with --dev FILE" in out and "three.csv:" in out


# -- tasks/speech.py -------------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("model.dropout=1", r"^model\.dropout: must be in \[0, 1\), got 1\.0$"),
    ("data.dev_fraction=0", r"^data\.dev_fraction: must be in \(0, 1\), got 0\.0$"),
    ("data.n_mfcc=50", r"^data\.n_mfcc: 50 is more than data\.n_mels=40$"),
    ("data.min_digits=5", r"^data\.min_digits \(5\) > data\.max_digits \(.*\)$"),
    ("data.silence_ms=300,100", r"^data\.silence_ms: expected min,max with 0 <= min <= max, got \[300.0, 100.0\]$"),
    ("data.snr_db=20,10", r"^data\.snr_db: expected min,max \(or empty for no noise\), got \[20\.0, 10\.0\]$"),
    ("data.hop_ms=30", r"^data\.frame_ms/hop_ms: need 0 < hop_ms <= frame_ms, got 25\.0, 30\.0$"),
])
def test_speech_config_limits_name_the_key(override: str, message: str) -> None:
    from rnnkit.tasks.config import ConfigError, load_config
    from rnnkit.tasks.speech import Config

    extra = ["data.features=mfcc", "data.n_mels=40"] if "n_mfcc" in override else []
    if "min_digits" in override:
        extra = ["data.max_digits=3"]
    with pytest.raises(ConfigError, match=message):
        load_config(Config, overrides=[*extra, override])


def _speech_model(bidirectional: bool = False) -> Any:
    from rnnkit.tasks.speech import (
        BLANK,
        DataConfig,
        DecodeConfig,
        Prepared,
        SpeechFeatures,
        SpeechModel,
        TrainedSpeechModel,
    )

    torch.manual_seed(0)
    feats = SpeechFeatures(8000, "logmel", n_mels=8)
    tokens = [BLANK, " ", "a", "b"]
    model = SpeechModel(feats.size, len(tokens), head="ctc", hidden_size=4, num_layers=1, bidirectional=bidirectional,
                        subsampling="stack", subsample_factor=2, dropout=0.0)
    prep = Prepared(feats, "ctc", "chars", tokens, True, ["ab"], DataConfig())
    return TrainedSpeechModel(model.eval(), prep, DecodeConfig())


def test_speech_streaming_needs_a_streamable_model_and_a_positive_chunk() -> None:
    bi = _speech_model(bidirectional=True)
    with pytest.raises(ValueError, match="ctc_chunk needs a streamable model"):
        bi.model.ctc_chunk(torch.zeros(1, 4, bi.prep.features.size), None)
    uni = _speech_model()
    with pytest.raises(ValueError, match="chunk size must be at least one sample, got 0"):
        uni.transcribe_stream(torch.zeros(800), 0)


def test_speech_targets_outside_the_training_units_name_the_file() -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.speech import DataConfig, Prepared

    ctc = _speech_model().prep
    assert ctc.encode_target("ab a", "x.wav") == [2, 3, 1, 2]
    with pytest.raises(ConfigError, match=r"^y\.wav: char 'c' was not in the training transcripts"):
        ctc.encode_target("abc", "y.wav")
    classes = Prepared(ctc.features, "classifier", "chars", ["no", "yes"], True, [], DataConfig())
    assert classes.encode_target("yes", "a.wav") == [1]
    with pytest.raises(ConfigError, match=r"^b\.wav: label 'maybe' is not a trained class \(no, yes\)"):
        classes.encode_target("maybe", "b.wav")


def test_speech_list_dataset_word_lists_and_empty_sources(tmp_path: Path) -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.speech import DataConfig, _ListDataset, connect_digits, read_word_list

    assert len(_ListDataset([(torch.zeros(1), [1]), (torch.zeros(1), [2])])) == 2
    assert connect_digits([], 5, DataConfig(), 8000, 0, "dev") == []
    with pytest.raises(FileNotFoundError, match="lexicon word list not found: .*nope.txt"):
        read_word_list(tmp_path / "nope.txt")
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ConfigError, match="lexicon word list .*blank.txt is empty"):
        read_word_list(tmp_path / "blank.txt")
    (tmp_path / "words.txt").write_text("Yes no\nYES\n")
    assert read_word_list(tmp_path / "words.txt", lowercase=True) == ["no", "yes"]


def test_speech_speaker_split_needs_two_speakers() -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.speech import DataConfig, Utterance, split_dev

    items = [Utterance(f"k{i}", "a", speaker="jo") for i in range(4)]
    with pytest.raises(ConfigError, match="data.dev_split=speaker needs at least two speakers"):
        split_dev(items, DataConfig(dev_split="speaker"), 0)


def test_speech_evaluate_set_and_score_without_waves_are_clear_errors() -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.speech import Utterance

    model = _speech_model()
    with pytest.raises(ConfigError, match=r"evaluate --set accepts data\.\* and decode\.\* keys only, got \['model'\]"):
        model.evaluate("unused", ["model.hidden_size=3"])
    with pytest.raises(ValueError, match=r"score\(\) needs loaded utterances"):
        model.score([Utterance("k", "ab")])


def test_speech_folder_pattern_without_a_label_group_names_the_file(tmp_path: Path) -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.speech import DataConfig, list_items

    sf = pytest.importorskip("soundfile")
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "jo_1.wav", np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(ConfigError, match=r"jo_1\.wav: no label; add a 'label' group to data\.pattern"):
        list_items(tmp_path / "audio", DataConfig(pattern=r"[a-z]+_\d+\.wav"))
