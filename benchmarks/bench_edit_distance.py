"""WER/CER scoring: ``rnnkit.nn.ctc.error_counts`` with rapidfuzz's Levenshtein against the plain
dynamic programme it falls back to without the ``audio`` extra.

    python benchmarks/bench_edit_distance.py            # print the table (~10 s)
    python benchmarks/bench_edit_distance.py --write    # also replace this section of RESULTS.md
    python benchmarks/bench_edit_distance.py --quick    # smoke run

The workload is a speech dev set's scoring: 32 utterances of 30 words (2-8 letters), each
hypothesis the reference with 15% of its characters replaced (by x, y or a space), scored for
word and character errors as the speech task scores every dev epoch, ``evaluate`` and ``score``.
The two paths give the same counts (checked before timing).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_md import best_per_call, section_benchmark  # benchmarks/results_md.py

from rnnkit.nn.ctc import error_counts

SECTION = "## WER/CER scoring: rapidfuzz against the plain dynamic programme"


def _pairs(quick: bool) -> list[tuple[str, str]]:
    rng = random.Random(0)
    refs = [" ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 8))) for _ in range(30))
            for _ in range(8 if quick else 32)]
    hyps = ["".join(c if rng.random() > 0.15 else rng.choice("xy ") for c in r) for r in refs]
    return list(zip(refs, hyps))


def tables(quick: bool, rounds: int) -> list[str]:
    pairs = _pairs(quick)

    def score() -> list[tuple[int, int, int, int]]:
        return [error_counts(r, h) for r, h in pairs]

    def plain() -> list[tuple[int, int, int, int]]:
        with mock.patch.dict(sys.modules, {"rapidfuzz.distance": None}):  # the import fails: the fallback runs
            return score()

    assert score() == plain(), "rapidfuzz and the plain programme disagree"
    fast = best_per_call(score, rounds, calls=5)
    slow = best_per_call(plain, rounds)
    chars = sum(len(r) for r, _ in pairs) / len(pairs)
    return [f"{len(pairs)} utterances of 30 words ({chars:.0f} characters on average), 15% of the characters "
            "changed.", "",
            "| path | ms per dev set | ms per utterance |", "|---|---:|---:|",
            f"| rapidfuzz (`audio` extra) | {fast * 1e3:.3f} | {fast * 1e3 / len(pairs):.4f} |",
            f"| plain dynamic programme | {slow * 1e3:.1f} | {slow * 1e3 / len(pairs):.2f} |", "",
            f"rapidfuzz is {slow / fast:.0f}x faster; the counts are the same."]


if __name__ == "__main__":
    section_benchmark("bench_edit_distance.py", __doc__, SECTION, tables)
