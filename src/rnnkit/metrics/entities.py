"""Entity-level precision, recall and F1 as the CoNLL scorer (conlleval, seqeval's default) counts them.

An entity counts as correct only when its type and both boundaries match. Chunks are read
leniently, like conlleval: an ``I-X`` that cannot continue a chunk starts a new one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def entity_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]],
                  scheme: str = "IOB2") -> dict[str, Any]:
    """Micro precision/recall/F1 over entities, per-type figures and token accuracy.

    Args:
        gold: gold tag sequences.
        predicted: predicted tag sequences (same lengths).
        scheme: ``IOB1``, ``IOB2`` or ``BIOES``.

    Returns:
        ``{"precision", "recall", "f1", "token_accuracy", "per_type": {type: {precision, recall,
        f1, support}}}``, figures in [0, 1].
    """
    from ..data.conll import tags_to_spans

    if len(gold) != len(predicted):
        raise ValueError(f"gold has {len(gold)} sentences but predicted has {len(predicted)}")
    true_pos: Counter[str] = Counter()
    gold_count: Counter[str] = Counter()
    pred_count: Counter[str] = Counter()
    tokens = correct_tokens = 0
    for i, (gold_tags, pred_tags) in enumerate(zip(gold, predicted)):
        if len(gold_tags) != len(pred_tags):
            raise ValueError(f"sentence {i}: {len(gold_tags)} gold tags but {len(pred_tags)} predicted")
        tokens += len(gold_tags)
        correct_tokens += sum(a == b for a, b in zip(gold_tags, pred_tags))
        gold_spans = set(tags_to_spans(list(gold_tags), scheme))
        pred_spans = set(tags_to_spans(list(pred_tags), scheme))
        gold_count.update(s.label for s in gold_spans)
        pred_count.update(s.label for s in pred_spans)
        true_pos.update(s.label for s in gold_spans & pred_spans)

    def prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    precision, recall, f1 = prf(sum(true_pos.values()), sum(pred_count.values()), sum(gold_count.values()))
    per_type = {}
    for label in sorted(set(gold_count) | set(pred_count)):
        p, r, f = prf(true_pos[label], pred_count[label], gold_count[label])
        per_type[label] = {"precision": p, "recall": r, "f1": f, "support": gold_count[label]}
    return {"precision": precision, "recall": recall, "f1": f1,
            "token_accuracy": correct_tokens / tokens if tokens else 0.0, "per_type": per_type}
