"""Mutation testing, round 13: entity scores (CoNLL chunks of IOB1/IOB2/BIOES tags and the
entity-level figures built on them), the forecast errors left over from round 12 (MAPE, MASE's
in-sample scale, the Gaussian CRPS of probabilistic_metrics), and the stateful parts of the
language-model task: the hidden state carried between truncated-BPTT windows on the dev stream
and its reset at each dev pass, the dev streams' layout, stream scoring (evaluation mode,
parallel streams) and the first token of generation from an empty prompt.

Each test here kills a plausible bug (the dev stream starting from the state the previous dev
pass ended in, an ``E-`` tag that leaves its chunk open, MASE's scale pooled over target series
...) that the rest of the suite let through. The expected values come from independent
references: a plain torch pass over each whole stream in one call (the stateful windows must
equal it), hand-computed numbers, and conlleval's chunk definition written out here, never from
the code path under test.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# -- language model: state carried between windows ------------------------------------------------
WORDS = (["the cat", "a dog", "my friend"], ["sees", "likes", "eats"], ["fish", "the moon", "a tree"])


def _corpus(path: Path, lines: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(w) for w in WORDS) + " ." for _ in range(lines)) + "\n")
    return path


def _captured_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, batch_size: int, bptt: int,
                       dev_lines: int) -> dict[str, Any]:
    """What ``language_model.train`` hands the engine (model, loaders, loss/predict/metric functions),
    without training: a tiny one-layer LSTM, no dropout, so every call is deterministic."""
    import rnnkit.tasks.engine as engine
    from rnnkit.tasks import language_model as lm_task
    from rnnkit.tasks.run import RunDir

    captured: dict[str, Any] = {}

    class Captured(Exception):
        pass

    def fake_fit(model: torch.nn.Module, train_loader: Any, dev_loader: Any, **kw: Any) -> None:
        captured.update(kw, model=model, train=train_loader, dev=dev_loader)
        raise Captured

    monkeypatch.setattr(engine, "fit", fake_fit)
    cfg = lm_task.Config()
    cfg.train.batch_size, cfg.train.bptt, cfg.train.accelerator = batch_size, bptt, "cpu"
    cfg.model.hidden_size = cfg.model.embedding_dim = 6
    cfg.model.num_layers, cfg.model.dropout = 1, 0.0
    run = RunDir.create(tmp_path, lm_task.NAME, "r")
    with pytest.raises(Captured):
        lm_task.train(cfg, _corpus(tmp_path / "train.txt", 30, 0), _corpus(tmp_path / "dev.txt", dev_lines, 1), run,
                      log=lambda s: None, progress=False)
    captured["model"].eval()
    return captured


def _one_pass_window_nll(model: torch.nn.Module, streams: np.ndarray, windows: list[Any]) -> list[float]:
    """Summed NLL of each window's targets, read off ONE forward call over the whole streams
    from a fresh state (no windows, nothing carried by hand)."""
    grid = torch.from_numpy(np.asarray(streams, dtype=np.int64))
    with torch.no_grad():
        logits, _ = model(grid[:, :-1])
        nll = F.cross_entropy(logits.double().transpose(1, 2), grid[:, 1:], reduction="none")  # [S, T]
    return [float(nll[:, int(start):int(start) + inputs.shape[1]].sum()) for inputs, _, start in windows]


def test_each_dev_pass_starts_from_a_fresh_state_and_carries_it_between_windows(tmp_path, monkeypatch):
    """Kills: the dev state not reset at the start of a dev pass (the second pass reads on from
    the end of the first), the dev stream starting from the training streams' state (equal
    stream counts here, so no shape error hides it), and the state not carried between dev windows.
    Every window's NLL and count equal their share of one forward pass over the dev streams."""
    cap = _captured_training(tmp_path, monkeypatch, batch_size=10, bptt=2, dev_lines=12)
    model, loss_fn, predict_fn, dev = cap["model"], cap["loss_fn"], cap["predict_fn"], cap["dev"]
    streams = dev.dataset.streams
    assert streams.shape[0] == 10  # as many dev streams as training streams: a state of one fits the other
    train_windows = list(cap["train"])
    for _ in range(2):
        with torch.no_grad():
            for w in train_windows[:2]:  # training moves its streams on between dev passes
                loss_fn(model, w)
            windows = list(dev)
            assert len(windows) >= 3
            out = [predict_fn(model, w) for w in windows]
        expected = _one_pass_window_nll(model, streams, windows)
        for k, ((nll, count), (_, targets, _)) in enumerate(zip(out, windows, strict=True)):
            assert int(count.sum()) == targets.numel()
            assert float(nll.sum()) == pytest.approx(expected[k], rel=1e-5), k


def test_stream_nll_scores_a_model_left_in_training_mode_without_dropout() -> None:
    """Kills: ``stream_nll`` not switching the model to evaluation mode: a model handed over in
    training mode (as a training loop leaves it) would be scored with dropout on, a random figure
    above the model's real NLL. The result must equal one plain forward pass in eval mode."""
    from rnnkit.tasks.language_model import RNNLanguageModel, stream_nll

    torch.manual_seed(0)
    model = RNNLanguageModel(11, embedding_dim=6, hidden_size=6, num_layers=2, dropout=0.5, embedding_dropout=0.3)
    ids = np.random.default_rng(0).integers(0, 11, size=23)
    grid = torch.from_numpy(ids[None].astype(np.int64))
    model.eval()
    with torch.no_grad():
        logits, _ = model(grid[:, :-1])
        expected = float(F.cross_entropy(logits[0].double(), grid[0, 1:], reduction="sum"))
    model.train()
    total, count = stream_nll(model, ids, batch_size=1, bptt=4)
    assert count == 22 and total == pytest.approx(expected, rel=1e-5)


def test_evaluate_scores_the_number_of_parallel_streams_it_is_given(tmp_path) -> None:
    """Kills: ``TrainedLanguageModel.evaluate`` ignoring ``batch_size`` (always one stream). With 3
    streams the ids are cut into 3 contiguous parts, each scored from a fresh state, its first
    token unscored and the remainder dropped: the figure of one forward pass per part."""
    from rnnkit.tasks.language_model import DataConfig, Preprocessor, RNNLanguageModel, TrainedLanguageModel

    text = _corpus(tmp_path / "text.txt", 6, 2)
    prep = Preprocessor.fit(text, DataConfig())
    torch.manual_seed(0)
    lm = TrainedLanguageModel(RNNLanguageModel(len(prep.vocab), embedding_dim=6, hidden_size=6, num_layers=1), prep)
    ids = np.array(prep.ids_of_file(text, tmp_path / "ids.bin"), dtype=np.int64)
    steps = len(ids) // 3
    grid = torch.from_numpy(ids[: 3 * steps].reshape(3, steps))
    with torch.no_grad():
        logits, _ = lm.model(grid[:, :-1])
        nll = float(F.cross_entropy(logits.double().reshape(-1, logits.shape[-1]), grid[:, 1:].reshape(-1),
                                    reduction="sum"))
    metrics = lm.evaluate(text, batch_size=3)
    assert metrics["tokens"] == 3 * (steps - 1) < len(ids) - 1
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / (3 * (steps - 1))), rel=1e-5)


def test_dev_streams_each_hold_a_full_window(tmp_path, monkeypatch) -> None:
    """Kills: the dev stream count taken as ``len // bptt`` instead of ``len // (bptt + 1)``: a
    stream of ``bptt`` tokens holds ``bptt - 1`` targets, less than one window. The dev text is
    laid out as the most streams (at most 10) that each hold ``bptt + 1`` tokens."""
    cap = _captured_training(tmp_path, monkeypatch, batch_size=2, bptt=6, dev_lines=4)
    streams = cap["dev"].dataset.streams
    dev_tokens = sum(len(line.split()) + 1 for line in (tmp_path / "dev.txt").read_text().splitlines())  # + <eos>
    expected = dev_tokens // 7
    assert expected < 10 and dev_tokens // 6 != expected  # the two readings differ on this text
    assert streams.shape == (expected, dev_tokens // expected)
    assert streams.shape[1] >= 7


def test_an_empty_prompt_draws_the_first_token_by_its_training_frequency(tmp_path, monkeypatch) -> None:
    """Kills: the first token of an empty prompt (a model whose text marks no line starts) drawn
    from a flat distribution instead of the training frequencies. Greedy decoding cannot tell (the
    most frequent token is the first one either way); the sampled distribution is p(x) = count / total."""
    from rnnkit.tasks.language_model import DataConfig, Preprocessor, RNNLanguageModel, TrainedLanguageModel

    text = tmp_path / "text.txt"
    text.write_text("a a a a a a b\na a c\n")  # a: 8, b: 1, c: 1
    prep = Preprocessor.fit(text, DataConfig(line_ending="drop"))
    lm = TrainedLanguageModel(RNNLanguageModel(len(prep.vocab), embedding_dim=4, hidden_size=4, num_layers=1), prep)
    seen: list[torch.Tensor] = []
    draw = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda p, n, **kw: (seen.append(p.detach().clone()), draw(p, n, **kw))[1])
    lm.generate("", length=1, seed=0)
    expected = {"a": 0.8, "b": 0.1, "c": 0.1}
    probs = {prep.vocab.id_to_token(i): float(v) for i, v in enumerate(seen[0]) if v > 0}
    assert probs == pytest.approx(expected)


# -- entity scores -------------------------------------------------------------------------------
def _conlleval_chunks(tags: list[str]) -> set[tuple[str, int, int]]:
    """Chunks ``(type, first, last)`` as conlleval's startOfChunk / endOfChunk define them (any of
    the B/I/E/S prefixes, whatever the scheme)."""
    def ends(prev: str, tag: str, prev_type: str, typ: str) -> bool:
        return prev in "ES" or (prev in "BI" and tag in "BSO") or (prev != "O" and prev_type != typ)

    def starts(prev: str, tag: str, prev_type: str, typ: str) -> bool:
        return tag in "BS" or (prev in "ESO" and tag in "IE") or (tag != "O" and prev_type != typ)

    chunks, prev, prev_type, first = set(), "O", "", 0
    for i, t in enumerate([*tags, "O"]):
        tag, typ = (t[0], t[2:]) if t != "O" else ("O", "")
        if prev != "O" and ends(prev, tag, prev_type, typ):
            chunks.add((prev_type, first, i - 1))
        if tag != "O" and starts(prev, tag, prev_type, typ):
            first = i
        prev, prev_type = tag, typ
    return chunks


def test_an_e_tag_closes_its_chunk_even_when_an_i_of_the_same_type_follows() -> None:
    """Kills: an ``E-X`` that continues a chunk left open (BIOES), so a following ``I-X`` or ``E-X``
    of the same type extends it. conlleval ends every chunk at an ``E``: ``B-PER E-PER I-PER E-PER``
    is two entities (tokens 0-1 and 2-3), not one of four tokens."""
    from rnnkit.metrics.entities import entity_scores

    gold = [["B-PER", "E-PER", "I-PER", "E-PER"], ["B-LOC", "E-LOC", "E-LOC", "O"]]
    assert _conlleval_chunks(gold[0]) == {("PER", 0, 1), ("PER", 2, 3)}
    assert _conlleval_chunks(gold[1]) == {("LOC", 0, 1), ("LOC", 2, 2)}
    whole = [["B-PER", "I-PER", "I-PER", "E-PER"], ["B-LOC", "I-LOC", "E-LOC", "O"]]  # one chunk each
    s = entity_scores(gold, whole, "BIOES")
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["per_type"]["PER"]["support"] == 2 and s["per_type"]["LOC"]["support"] == 2
    s = entity_scores(gold, [["B-PER", "E-PER", "O", "O"], ["B-LOC", "E-LOC", "S-LOC", "O"]], "BIOES")
    assert (s["precision"], s["recall"]) == pytest.approx((1.0, 3 / 4))


# -- forecast errors -------------------------------------------------------------------------------
def test_mape_scores_negative_actual_values_by_their_magnitude() -> None:
    """Kills: MAPE keeping only positive actual values (``y > 0`` instead of ``y != 0``): a series
    below zero (temperatures, net flows) would lose its steps. |(-2) - (-1)| / 2 = 0.5 and
    |4 - 5| / 4 = 0.25: 37.5%."""
    from rnnkit.metrics import forecasting as fm

    assert fm.mape([-2.0, 4.0], [-1.0, 5.0]) == pytest.approx(100 * (0.5 + 0.25) / 2)
    assert fm.mape([-4.0, 0.0], [-3.0, 7.0]) == pytest.approx(25.0)  # only the zero actual is left out


def test_mase_scale_is_one_figure_per_target_series() -> None:
    """Kills: the in-sample scale pooled over every target of an ``[N, T]`` history instead of one
    per column. Column 0 steps by 1, column 1 by 10 (seasonal lag 2: 2 and 20); a forecast off by
    2 in column 0 and by 20 in column 1 is exactly one scale off in both: MASE 1."""
    from rnnkit.metrics import forecasting as fm

    history = np.array([[0.0, 0.0], [1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    np.testing.assert_allclose(fm.mase_scale(history, 1), [1.0, 10.0])
    np.testing.assert_allclose(fm.mase_scale(history, 2), [2.0, 20.0])
    y, pred = np.array([[[5.0, 50.0]]]), np.array([[[7.0, 30.0]]])  # [N=1, H=1, T=2]
    assert fm.mase(y, pred, fm.mase_scale(history, 2)) == pytest.approx(1.0)


def test_a_history_of_one_season_and_one_step_has_a_scale() -> None:
    """Kills: the scale called undefined unless the history holds two or more seasonal differences
    (``len <= m + 1`` instead of ``len <= m``): ``m + 1`` steps give exactly one difference, a
    defined scale (the mean of one value)."""
    from rnnkit.metrics import forecasting as fm

    assert float(fm.mase_scale([1.0, 3.0], 1)) == pytest.approx(2.0)  # |3 - 1|
    assert float(fm.mase_scale([1.0, 2.0, 4.0], 2)) == pytest.approx(3.0)  # |4 - 1|
    np.testing.assert_allclose(fm.mase_scale([[1.0, 5.0], [2.0, 1.0]], 1), [1.0, 4.0])


def test_an_s_tag_in_iob2_tags_begins_an_entity_of_its_own() -> None:
    """Kills: ``S-X`` read as a continuation (like ``I-X``) in IOB1/IOB2 tags; the reader treats it
    as ``B-X`` (and conlleval starts a chunk at every ``S``): ``B-PER S-PER`` is two one-token
    entities, so the two-token prediction matches neither."""
    from rnnkit.metrics.entities import entity_scores

    gold = [["B-PER", "S-PER", "O"]]
    assert _conlleval_chunks(gold[0]) == {("PER", 0, 0), ("PER", 1, 1)}
    for scheme in ("IOB2", "IOB1"):
        s = entity_scores(gold, [["B-PER", "I-PER", "O"]], scheme)
        assert (s["precision"], s["recall"], s["per_type"]["PER"]["support"]) == (0.0, 0.0, 2), scheme
        s = entity_scores(gold, [["S-PER", "B-PER", "O"]], scheme)
        assert s["f1"] == 1.0, scheme


def test_probabilistic_metrics_use_the_gaussian_closed_form_when_given_mean_and_std() -> None:
    """Kills: ``gaussian=(mean, std)`` ignored (CRPS still from the few quantiles) or read as
    ``(std, mean)``. At y = mean = 1, std = 2 the closed form is sigma (2 phi(0) - 1/sqrt(pi))
    = 2 (2/sqrt(2 pi) - 1/sqrt(pi)) = 0.46739; the three quantiles alone give 2 * 0.2/3, and the
    swapped reading (mean 2, std 1) about 0.6."""
    from rnnkit.metrics import forecasting as fm

    y, q, levels = np.array([1.0]), np.array([[0.0, 1.0, 2.0]]), [0.1, 0.5, 0.9]
    out = fm.probabilistic_metrics(y, q, levels, gaussian=(np.array([1.0]), np.array([2.0])))
    assert out["crps"] == pytest.approx(2 * (2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi)))
    assert out["quantile_loss"] == pytest.approx((0.1 + 0.0 + 0.1) / 3)  # the pinball loss stays on the quantiles
