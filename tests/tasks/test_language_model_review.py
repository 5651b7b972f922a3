"""Review of the language-modelling task: perplexity and truncated-BPTT training against plain loops,
seeded generation, and one-line errors for bad files, settings and run folders."""

from __future__ import annotations

import json
import math
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.tasks.language_model import RNNLanguageModel, TrainedLanguageModel, stream_nll

runner = CliRunner()

SETTINGS = ["train.epochs=1", "model.hidden_size=8", "model.embedding_dim=8", "model.num_layers=2", "model.dropout=0",
            "train.batch_size=3", "train.bptt=7", "train.optimizer=asgd", "train.learning_rate=0.5",
            "train.clip_norm=null", "train.patience=null", "train.accelerator=cpu"]


def _corpus(path: Path, lines: int, seed: int) -> Path:
    rng = random.Random(seed)
    subjects, verbs, objects = ["the cat", "a dog", "my friend"], ["sees", "likes", "eats"], ["fish", "the moon"]
    path.write_text("\n".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} ."
                              for _ in range(lines)) + "\n")
    return path


def _args(*settings: str) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_review")
    train, dev = _corpus(root / "train.txt", 120, 0), _corpus(root / "dev.txt", 25, 1)
    result = runner.invoke(app, ["train", "language-model", "--train", str(train), "--dev", str(dev), "--out", str(root),
                                 "--name", "run", "--quiet", *_args(*SETTINGS)])
    assert result.exit_code == 0, result.output
    return root / "run", train, dev


def _ids(model: TrainedLanguageModel, path: Path) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        return np.array(model.prep.ids_of_file(path, Path(tmp) / "ids.bin"), dtype=np.int64)


def _reference_nll(model: RNNLanguageModel, stream: np.ndarray) -> float:
    """Token by token from a fresh state: -log p(x[t+1] | x[..t]) summed over the stream."""
    state, total = None, 0.0
    with torch.no_grad():
        for t in range(len(stream) - 1):
            logits, state = model.step(torch.tensor([int(stream[t])]), state)
            total -= float(torch.log_softmax(logits[0].double(), -1)[int(stream[t + 1])])
    return total


def _one_line_error(output: str) -> str:
    assert "Traceback" not in output and "Error(" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


# -- perplexity and training against plain loops --------------------------------------------------
def test_evaluate_and_stream_nll_match_a_token_by_token_reference(run):
    folder, _, dev = run
    lm = TrainedLanguageModel.load(folder)
    ids = _ids(lm, dev)
    reference = _reference_nll(lm.model, ids)
    metrics = lm.evaluate(dev)
    assert metrics["tokens"] == len(ids) - 1  # every token after the first, none twice
    assert metrics["perplexity"] == pytest.approx(math.exp(reference / (len(ids) - 1)), rel=1e-5)
    for bptt in (1, 3, 7, 10_000):  # window borders anywhere: no token skipped or scored twice
        nll, count = stream_nll(lm.model, ids, batch_size=1, bptt=bptt)
        assert count == len(ids) - 1 and nll == pytest.approx(reference, rel=1e-5)
    # S parallel streams: each its own contiguous slice from a fresh state, the remainder dropped
    steps = len(ids) // 3
    streams = [ids[k * steps:(k + 1) * steps] for k in range(3)]
    nll, count = stream_nll(lm.model, ids, batch_size=3, bptt=4)
    assert count == 3 * (steps - 1) and nll == pytest.approx(sum(_reference_nll(lm.model, s) for s in streams), rel=1e-5)
    # metrics.json reads dev at batch size 1; the per-epoch figure in history.csv at min(10, ...) streams
    saved = json.loads((folder / "metrics.json").read_text())["dev"]
    assert saved["tokens"] == len(ids) - 1 and saved["perplexity"] == pytest.approx(metrics["perplexity"], rel=1e-5)
    dev_streams = min(10, len(ids) // 8)
    steps = len(ids) // dev_streams
    expected = sum(_reference_nll(lm.model, ids[k * steps:(k + 1) * steps]) for k in range(dev_streams))
    history = (folder / "history.csv").read_text().splitlines()
    row = dict(zip(history[0].split(","), history[1].split(","), strict=True))
    assert float(row["dev_perplexity"]) == pytest.approx(math.exp(expected / (dev_streams * (steps - 1))), rel=1e-4)


def test_tbptt_training_matches_a_plain_loop(run):
    """One epoch of plain SGD: windows of bptt over 3 streams in order, state carried detached."""
    folder, train, _ = run
    lm = TrainedLanguageModel.load(folder)
    hyper = json.loads((folder / "model.json").read_text())["hyperparameters"]
    torch.manual_seed(0)  # train.seed: the same initial weights
    ref = RNNLanguageModel(**hyper).train()
    ids = _ids(lm, train)
    grid = torch.from_numpy(ids[: len(ids) // 3 * 3].reshape(3, -1))
    opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    state, total = None, grid.shape[1] - 1
    for start in range(0, total, 7):
        length = min(7, total - start)
        logits, state = ref(grid[:, start:start + length], state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 grid[:, start + 1:start + length + 1].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        state = [tuple(s.detach() for s in st) for st in state]
    trained, expected = load_file(folder / "model.safetensors"), ref.state_dict()  # tied decoder stored once
    assert trained and set(trained) <= set(expected)
    for name, value in trained.items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0)


# -- generation ------------------------------------------------------------------------------------
def test_generation_is_reproducible_with_a_seed_and_greedy_is_the_argmax(run):
    folder, _, _ = run
    lm = TrainedLanguageModel.load(folder)
    first = lm.generate("the cat", length=30, seed=7, stop="")
    torch.manual_seed(123)  # the global random state does not matter with a seed
    assert lm.generate("the cat", length=30, seed=7, stop="") == first
    assert any(lm.generate("the cat", length=30, seed=s, stop="")["tokens"] != first["tokens"] for s in (8, 9, 10))
    # greedy: the most likely token (never <unk>) after the prompt, fed back one step at a time
    vocab = lm.prep.vocab
    ids = [vocab.token_to_id("the"), vocab.token_to_id("cat")]
    out, state = [], None
    with torch.no_grad():
        for token in ids:
            logits, state = lm.model.step(torch.tensor([token]), state)
        for _ in range(12):
            scores = logits[0].clone()
            scores[vocab.unk_id] = -math.inf
            token = int(scores.argmax())
            out.append(vocab.id_to_token(token))
            logits, state = lm.model.step(torch.tensor([token]), state)
    assert lm.generate("the cat", length=12, greedy=True, stop="")["tokens"] == out
    # a prompt of unknown tokens only is read as <unk> and named; top-k past the vocabulary keeps all
    unknown = lm.generate("zebra unicorn", length=5, seed=1)
    assert unknown["unknown_prompt_tokens"] == ["unicorn", "zebra"]
    assert lm.generate("the", length=8, seed=3, top_k=10_000) == lm.generate("the", length=8, seed=3)


def test_stop_at_unk_says_it_is_never_generated(run):
    folder, _, _ = run
    result = runner.invoke(app, ["generate", str(folder), "--stop", "<unk>", "--seed", "0"])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "never generated" in line and "not in the vocabulary" not in line and "fix:" in line


@pytest.mark.parametrize("args", [["--temperature", "0"], ["--temperature", "-1"], ["--top-p", "0"]])
def test_bad_sampling_settings_are_one_line_errors(run, args):
    result = runner.invoke(app, ["generate", str(run[0]), *args])
    assert result.exit_code == 2 and "fix:" in _one_line_error(result.output)


# -- bad files and settings ------------------------------------------------------------------------
def test_a_missing_or_folder_data_file_names_the_fix(run, tmp_path):
    folder, _, _ = run
    for path, problem in ((tmp_path / "nope.txt", "not found"), (tmp_path, "is a folder")):
        result = runner.invoke(app, ["evaluate", str(folder), "--data", str(path)])
        line = _one_line_error(result.output)
        assert result.exit_code == 2 and problem in line and "fix:" in line
        result = runner.invoke(app, ["train", "language-model", "--train", str(path), "--out", str(tmp_path / "runs"),
                                     "--quiet"])
        line = _one_line_error(result.output)
        assert result.exit_code == 2 and problem in line and "fix:" in line


@pytest.mark.parametrize("content", [b"", b"\n \n\t\n" * 5, b"the cat \xff\xfe sees\n" * 5])
def test_empty_blank_and_undecodable_files_are_one_line_errors(tmp_path, content):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    result = runner.invoke(app, ["train", "language-model", "--train", str(bad), "--out", str(tmp_path / "runs"),
                                 "--quiet"])
    assert result.exit_code == 2 and "fix:" in _one_line_error(result.output)


@pytest.mark.parametrize("level", ["word", "subword"])
def test_line_ending_keep_needs_a_char_model(tmp_path, level):
    """keep passes the newline on as a token: a word tokenizer dropped it (keep read as drop), a subword
    one turned every line break into <unk>."""
    result = runner.invoke(app, ["train", "language-model", *_args(f"data.level={level}", "data.line_ending=keep"),
                                 "--print-config"])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "data.line_ending=keep" in line and "fix:" in line
    ok = runner.invoke(app, ["train", "language-model", *_args("data.level=char", "data.line_ending=keep"),
                             "--print-config"])
    assert ok.exit_code == 0, ok.output


def test_a_dev_fraction_that_leaves_too_few_tokens_is_named(tmp_path):
    corpus = _corpus(tmp_path / "train.txt", 40, 0)
    result = runner.invoke(app, ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path / "runs"),
                                 "--quiet", *_args("data.dev_fraction=0.95", "train.batch_size=4", "train.bptt=10")])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "data.dev_fraction" in line and "train.batch_size" in line


def test_bptt_of_zero_or_past_the_corpus_and_unknown_keys(run, tmp_path):
    _, train, _ = run
    base = ["train", "language-model", "--train", str(train), "--out", str(tmp_path / "runs"), "--quiet"]
    for settings, words in ((["train.bptt=0"], "train.bptt"), (["train.bptt=1000000000"], "train.bptt"),
                            (["train.bptx=3"], "train.bptx")):
        result = runner.invoke(app, [*base, *_args(*settings)])
        assert result.exit_code == 2 and words in _one_line_error(result.output)


# -- corrupt run folders ---------------------------------------------------------------------------
def _copy(run, tmp_path) -> Path:
    return Path(shutil.copytree(run[0], tmp_path / "copy"))


@pytest.mark.parametrize("content", ["{}", '{"data": {"foo": 1}}', '{"data": {"level": "bogus"}}', "[]", '{"data": 3}'])
def test_a_corrupt_preprocessing_json_is_a_one_line_error(run, tmp_path, content):
    folder = _copy(run, tmp_path)
    (folder / "preprocessing.json").write_text(content)
    result = runner.invoke(app, ["evaluate", str(folder), "--data", str(run[2])])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "preprocessing.json" in line and "train again" in line


@pytest.mark.parametrize("hyper", [{}, None, {"vocab_size": "many"}])
def test_corrupt_hyperparameters_in_model_json_are_a_one_line_error(run, tmp_path, hyper):
    folder = _copy(run, tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    if hyper is None:
        del meta["hyperparameters"]
    else:
        meta["hyperparameters"] = hyper
    (folder / "model.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["generate", str(folder), "--length", "3"])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "model.json" in line and "train again" in line


def test_a_vocabulary_of_another_size_is_refused(run, tmp_path):
    """vocab.json with fewer tokens than the model's embedding (a mixed-up folder) crashed scoring with
    an IndexError, or silently shifted ids."""
    from rnnkit.data.vocab import Vocabulary

    folder = _copy(run, tmp_path)
    vocab = Vocabulary.load(folder / "vocab.json")
    counts = {vocab.id_to_token(i): 1 for i in range(len(vocab.specials), len(vocab) - 3)}
    Vocabulary.from_counts(counts, pad_token=None, bos_token=None).save(folder / "vocab.json")
    result = runner.invoke(app, ["evaluate", str(folder), "--data", str(run[2])])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "vocab.json" in line and "model.json" in line


@pytest.mark.parametrize("value", ["x", "0", "1.5"])
def test_a_bad_bptt_in_config_yaml_names_the_file(run, tmp_path, value):
    folder = _copy(run, tmp_path)
    config = (folder / "config.yaml").read_text()
    (folder / "config.yaml").write_text(config.replace("bptt: 7", f"bptt: {value}"))
    result = runner.invoke(app, ["evaluate", str(folder), "--data", str(run[2])])
    line = _one_line_error(result.output)
    assert result.exit_code == 2 and "config.yaml" in line and "train.bptt" in line


@pytest.mark.parametrize("level", ["word", "char", "subword"])
def test_a_dev_text_of_blank_lines_only_is_refused(tmp_path, level):
    # its perplexity would only score line breaks following line breaks: no model can be selected on it
    train = _corpus(tmp_path / "train.txt", 120, 0)
    dev = tmp_path / "dev.txt"
    dev.write_text("\n\n  \n\n")
    result = runner.invoke(app, ["train", "language-model", "--train", str(train), "--dev", str(dev), "--out",
                                 str(tmp_path / "runs"), "--quiet", *_args(*SETTINGS, f"data.level={level}",
                                                                           "data.vocab_size=40")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "the dev text is empty or only blank lines" in errors[0] and "fix:" in errors[0]
    # the tail held out of the training file is checked the same way
    train.write_text(train.read_text() + "\n" * 400)
    result = runner.invoke(app, ["train", "language-model", "--train", str(train), "--out", str(tmp_path / "runs"),
                                 "--quiet", *_args(*SETTINGS, f"data.level={level}", "data.vocab_size=40",
                                                   "data.dev_fraction=0.5")])
    assert result.exit_code == 2 and f"the held-out tail of {train}: the dev text is empty" in result.output


def test_the_unk_share_is_reported_and_a_large_one_noted(tmp_path):
    train, dev = _corpus(tmp_path / "train.txt", 120, 0), _corpus(tmp_path / "dev.txt", 25, 1)
    for vocab_size, noted in ((6, True), (50, False)):
        name = f"v{vocab_size}"
        result = runner.invoke(app, ["train", "language-model", "--train", str(train), "--dev", str(dev), "--out",
                                     str(tmp_path), "--name", name, "--quiet",
                                     *_args(*SETTINGS, "data.level=word", f"data.vocab_size={vocab_size}")])
        assert result.exit_code == 0, result.output
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        vocab = set(TrainedLanguageModel.load(tmp_path / name).prep.vocab) - {"<unk>"}
        # reference: the dev text's words, one <eos> per line, counted outside the vocabulary by hand
        words = [w for line in dev.read_text().splitlines() for w in [*line.split(), "<eos>"]]
        expected = sum(w not in vocab for w in words) / len(words)
        assert metrics["unk_share"]["dev"] == pytest.approx(expected)
        assert ("notes" in metrics) == noted == (expected > 0.05)
        assert ("**Note:**" in (tmp_path / name / "report.md").read_text()) == noted


def test_an_empty_prompt_without_a_start_token_starts_from_the_training_frequencies(tmp_path):
    # line_ending=drop: no token ever marked where a text starts, and <eos> was never trained; the first
    # token is drawn by its training frequency (greedy: the most frequent token), then the model goes on
    from collections import Counter

    corpus = _corpus(tmp_path / "train.txt", 120, 0)
    result = runner.invoke(app, ["train", "language-model", "--train", str(corpus), "--out", str(tmp_path),
                                 "--name", "drop", "--quiet", *_args(*SETTINGS, "data.line_ending=drop")])
    assert result.exit_code == 0, result.output
    model = TrainedLanguageModel.load(tmp_path / "drop")
    counts = Counter(w for line in corpus.read_text().splitlines() for w in line.split())
    in_vocab = {w: c for w, c in counts.items() if w in set(model.prep.vocab)}
    first = model.generate("", length=1, greedy=True)["tokens"][0]
    assert in_vocab[first] == max(in_vocab.values())
    # the rest follows from a fresh state fed that token: the same as prompting with it
    out = model.generate("", length=6, greedy=True)["tokens"]
    assert out[1:] == model.generate(first, length=5, greedy=True)["tokens"]
    sampled = [model.generate("", length=3, seed=s)["tokens"][0] for s in range(20)]
    assert len(set(sampled)) > 1 and all(t in in_vocab for t in sampled)
