"""Text classification results checked against independent references: the multi-label threshold
shared by predict and the metrics, and data.truncation for the hierarchical attention network."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from rnnkit.cli import app
from rnnkit.data.text import TextExample
from rnnkit.tasks.text_classification import (
    DataConfig,
    HierarchicalAttentionNetwork,
    Preprocessor,
    TextClassifier,
    TrainedTextClassifier,
    classification_metrics,
)

runner = CliRunner()


def _multi_label_reference(predicted: list[list[int]], truth: list[list[int]]) -> dict[str, object]:
    """Exact-match accuracy, micro F1 and per-class F1 (0 when undefined) and their mean, by hand."""
    classes = len(truth[0])
    stats = []
    for c in range(classes):
        pairs = [(p[c], t[c]) for p, t in zip(predicted, truth)]
        stats.append((sum(p and t for p, t in pairs), sum(p and not t for p, t in pairs),
                      sum(t and not p for p, t in pairs)))
    f1 = [2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0 for tp, fp, fn in stats]
    tp, fp, fn = (sum(s[i] for s in stats) for i in range(3))
    return {"accuracy": sum(p == t for p, t in zip(predicted, truth)) / len(truth),
            "micro_f1": 2 * tp / (2 * tp + fp + fn), "macro_f1": sum(f1) / classes, "f1": f1}


def test_multi_label_metrics_count_a_probability_of_exactly_one_half_as_predict_does():
    """predict gives a label at probability >= 0.5; the metrics (torchmetrics' own rule, > 0.5) did not
    count it, so evaluate scored other labels than predict printed."""
    texts = ["goal match", "chip code", "goal chip", "match code team"]
    truth = [["sport"], ["tech"], ["sport", "tech"], ["sport", "tech"]]
    prep = Preprocessor.fit(texts, truth, DataConfig(min_freq=1), "rnn", True)
    torch.manual_seed(0)
    model = TextClassifier(prep.encoder.vocab_size, len(prep.labels), embedding_dim=4, hidden_size=4, dropout=0.0)
    with torch.no_grad():  # class "tech": logit 0 for every text, probability exactly 0.5
        tech = prep.labels.classes.index("tech")
        model.classifier.weight[tech] = 0.0
        model.classifier.bias[tech] = 0.0
    trained = TrainedTextClassifier(model, prep)
    predictions = trained.predict(texts)
    assert all(p["probabilities"]["tech"] == 0.5 and "tech" in p["label"] for p in predictions)
    examples = [TextExample(t, "|".join(ls), f"f:{i}") for i, (t, ls) in enumerate(zip(texts, truth))]
    metrics = trained.evaluate_examples(examples)
    classes = metrics["classes"]
    ref = _multi_label_reference([[int(c in p["label"]) for c in classes] for p in predictions],
                                 [[int(c in ls) for c in classes] for ls in truth])
    for key in ("accuracy", "micro_f1", "macro_f1"):
        assert abs(metrics[key] - ref[key]) < 1e-6, key
    for got, want in zip(metrics["per_class"]["f1"], ref["f1"]):
        assert abs(got - want) < 1e-6


def test_multi_label_metrics_match_a_reference_on_random_scores():
    g = torch.Generator().manual_seed(0)
    for trial in range(10):
        scores = torch.rand(15, 4, generator=g)
        scores[trial % 15, trial % 4] = 0.5
        targets = (torch.rand(15, 4, generator=g) > 0.6).float()
        targets[0, 0] = 1.0  # micro F1 defined
        m = classification_metrics(scores, targets, multi_label=True)
        ref = _multi_label_reference((scores >= 0.5).long().tolist(), targets.long().tolist())
        for key in ("accuracy", "micro_f1", "macro_f1"):
            assert abs(m[key] - ref[key]) < 1e-6, key


def _han(prep: Preprocessor) -> TrainedTextClassifier:
    torch.manual_seed(0)
    model = HierarchicalAttentionNetwork(prep.encoder.vocab_size, len(prep.labels), embedding_dim=4, hidden_size=4,
                                         dropout=0.0)
    return TrainedTextClassifier(model, prep)


def test_han_honours_truncation_pre_and_keeps_the_last_sentences_and_tokens():
    """data.truncation=pre kept the first sentences and the first tokens of each with model.architecture=han."""
    texts = ["a b c. d e. f g h.", "a. b."]
    words = lambda prep, doc: [[prep.encoder.decode([i]) for i in s] for s in doc]  # noqa: E731
    pre = Preprocessor.fit(texts, [["x"], ["y"]], DataConfig(min_freq=1, max_sentences=2, max_sentence_length=2,
                                                             truncation="pre"), "han", False)
    assert [words(pre, d) for d in pre.encode_texts(texts)] == [[["e", "."], ["h", "."]], [["a", "."], ["b", "."]]]
    post = Preprocessor.fit(texts, [["x"], ["y"]], DataConfig(min_freq=1, max_sentences=2, max_sentence_length=2),
                            "han", False)
    assert [words(post, d) for d in post.encode_texts(texts)] == [[["a", "b"], ["d", "e"]], [["a", "."], ["b", "."]]]
    # predict and explain read the same (last) sentences: the kept document predicts as the whole one
    trained = _han(pre)
    whole, kept = trained.predict(["a b c. d e. f g h.", "e. h."])
    assert whole["probabilities"] == kept["probabilities"]
    explained = trained.explain("a b c. d e. f g h.")
    assert [s for s, _ in explained["weights"]] == ["d e.", "f g h."]


def test_balanced_class_weights_match_the_formula_and_reach_the_log(tmp_path):
    """``train.class_weight=balanced``: N / (C n_c) per class (scikit-learn's "balanced"), multi-label
    positives weighted by negatives / positives; the weights are logged and training runs with them."""
    from rnnkit.tasks.text_classification import class_weights

    y = torch.tensor([0, 0, 0, 1, 2, 2])
    torch.testing.assert_close(class_weights(y, 3, False), torch.tensor([6 / 9, 6 / 3, 6 / 6]))
    multi = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(class_weights(multi, 3, True), torch.tensor([1 / 3, 3.0, 1.0]))  # always-on: 1
    rows = ["text,label"] + [f"good fine nice {i},pos" for i in range(36)] + [f"bad awful poor {i},neg" for i in range(4)]
    data = tmp_path / "d.csv"
    data.write_text("\n".join(rows) + "\n")
    result = runner.invoke(app, ["train", "text-classification", "--train", str(data), "--out", str(tmp_path / "runs"),
                                 "--set", "train.class_weight=balanced", "--set", "train.epochs=1",
                                 "--set", "model.hidden_size=8", "--set", "model.embedding_dim=8",
                                 "--set", "data.min_freq=1", "--quiet"])
    assert result.exit_code == 0, result.output
    log = next((tmp_path / "runs").glob("*/train.log")).read_text()
    assert "class weights (train.class_weight=balanced): neg: " in log
