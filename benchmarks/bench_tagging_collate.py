"""What the tagging task's batch collation costs, next to the training step it feeds.

    python benchmarks/bench_tagging_collate.py            # print the table (quiet machine, ~1 min)
    python benchmarks/bench_tagging_collate.py --write    # also replace this section of RESULTS.md
    python benchmarks/bench_tagging_collate.py --quick    # smoke run (seconds)

Batches of 32 CoNLL-2003 training sentences (``../shared/data/conll2003/train.txt``; the
``--quick`` run, and any machine without the data, uses synthetic sentences of the same length
profile), encoded as the tagging task encodes them (word ids, character ids per word, tags), in the
length buckets the task's batch sampler draws. Rows: ``rnnkit.tasks.tagging.collate`` (every
tensor padded as Python lists, one ``torch.tensor`` call each); a per-word reference (one
``torch.tensor`` call per word's characters and a ``pad_sequence`` per batch, the way collation is
often written and how the task did it before); and, for scale, one training step (forward and
backward) of the default char-BiLSTM + BiLSTM + CRF tagger on the same batch.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import best_per_call, section_benchmark  # benchmarks/results_md.py

from rnnkit.data import read_conll
from rnnkit.data.conll import TaggedSentence
from rnnkit.tasks.tagging import DataConfig, Preprocessor, SequenceTagger, collate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "train.txt"
SECTION = "## Tagging: batch collation against the training step"
BATCH = 32


def per_word_collate(items: list) -> tuple[torch.Tensor, ...]:
    """The reference: a tensor per word's characters, padded with ``pad_sequence``."""
    words = pad_sequence([torch.tensor(w, dtype=torch.long) for w, _, _ in items], batch_first=True)
    steps = words.shape[1]
    width = max(len(c) for _, cs, _ in items for c in cs)
    chars = torch.zeros(len(items), steps, width, dtype=torch.long)
    char_lengths = torch.zeros(len(items), steps, dtype=torch.long)
    for b, (_, cs, _) in enumerate(items):
        for t, c in enumerate(cs):
            chars[b, t, :len(c)] = torch.tensor(c, dtype=torch.long)
            char_lengths[b, t] = len(c)
    tags = pad_sequence([torch.tensor(t, dtype=torch.long) for _, _, t in items], batch_first=True, padding_value=-1)
    lengths = torch.tensor([len(w) for w, _, _ in items], dtype=torch.long)
    return words, chars, char_lengths, lengths, tags


def _sentences(quick: bool) -> tuple[list[TaggedSentence], str]:
    if DATA.is_file() and not quick:
        return read_conll(DATA, -1), f"CoNLL-2003 train ({DATA.name})"
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    tags = ["O"] * 8 + ["B-PER", "I-PER", "B-LOC", "B-ORG", "B-MISC"]
    out = []
    for i in range(2000):
        n = max(1, int(rng.expovariate(1 / 14)))
        out.append(TaggedSentence(tuple(rng.choice(words) for _ in range(n)),
                                  tuple(rng.choice(tags) for _ in range(n)), f"synthetic:{i}", 0))
    return out, "synthetic sentences (no ../shared/data, or --quick)"


def tables(quick: bool, rounds: int) -> list[str]:
    sentences, source = _sentences(quick)
    cfg = DataConfig()
    prep = Preprocessor.fit(sentences, cfg)
    items = [(*prep.encode(list(s.tokens)), prep.encode_tags(s, "training")) for s in sentences]
    items.sort(key=lambda item: len(item[0]))  # length buckets, as the task's sampler draws them
    rng = random.Random(0)
    starts = rng.sample(range(0, len(items) - BATCH), min(20, len(items) - BATCH))
    batches = [items[s:s + BATCH] for s in starts]
    model = SequenceTagger(len(prep.words), len(prep.chars), len(prep.tags), unk_id=prep.words.unk_id,
                           constraints=prep.constraints())
    model.train()
    for batch in batches[:3]:  # the two collations agree, so the table compares like with like
        for a, b in zip(collate(batch), per_word_collate(batch), strict=True):
            assert torch.equal(a, b), "collate and the per-word reference disagree"

    def run_all(fn):  # one call: every sampled batch
        return lambda: [fn(b) for b in batches]

    def train_steps() -> None:
        for batch in batches:
            words, chars, char_lengths, lengths, tags = collate(batch)
            model.zero_grad(set_to_none=True)
            model.loss(model(words, chars, char_lengths, lengths), tags.clamp(min=0), lengths).backward()

    n = len(batches)
    fast = best_per_call(run_all(collate), rounds) / n
    slow = best_per_call(run_all(per_word_collate), rounds) / n
    step = best_per_call(train_steps, max(1, rounds // 2)) / n - fast
    tokens = sum(len(w) for b in batches for w, _, _ in b) / n
    return [f"{source}: {n} batches of {BATCH} sentences, {tokens:.0f} tokens per batch on average.", "",
            "| per batch of 32 sentences | ms | vs the training step |", "|---|---:|---:|",
            f"| `collate` (rnnkit.tasks.tagging) | {fast * 1e3:.2f} | {fast / step:.1%} |",
            f"| per-word reference (`torch.tensor` per word, `pad_sequence`) | {slow * 1e3:.2f} | {slow / step:.1%} |",
            f"| training step, char-BiLSTM + BiLSTM + CRF (forward + backward) | {step * 1e3:.1f} | 100% |", "",
            f"`collate` is {slow / fast:.1f}x faster than the per-word reference."]


if __name__ == "__main__":
    section_benchmark("bench_tagging_collate.py", __doc__, SECTION, tables)
