"""Held-out dev sets that keep duplicates on one side.

A corpus often holds the same text more than once (a repeated review, a CoNLL score line, a
translation pair in two places). Drawn item by item, a held-out dev set then shares items with
training, and the model is selected on texts it was trained on. :func:`take_whole_groups`
draws whole groups of equal items instead: an item and all its copies go to dev together.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def take_whole_groups(order: Sequence[int], keys: Sequence[Hashable], count: int, keep: int = 1) -> set[int]:
    """Indices to hold out: about ``count`` of ``order``, whole groups of equal ``keys`` at a time.

    Args:
        order: The candidate indices, in the (seeded, random) order to draw them in.
        keys: ``keys[i]`` identifies item ``i``'s content (its text, tokens or sentence pair);
            items with equal keys are held out together or not at all.
        count: How many to hold out, at most. With no duplicates exactly ``min(count, len(order) -
            keep)``, the first of ``order``; with duplicates, whole groups in the order drawn,
            skipping a group that would pass that number (it stays in training), so the held-out
            set may come out a little smaller.
        keep: How many of ``order`` must stay out of the held-out set. Where no group fits (a
            corpus of one text repeated), the first ``min(count, len(order) - keep)`` items are
            held out one by one, copies or not.

    Returns:
        The held-out indices.
    """
    groups: dict[Hashable, list[int]] = {}
    for i in order:
        groups.setdefault(keys[i], []).append(i)
    limit = min(count, len(order) - keep)
    held: set[int] = set()
    for i in order:
        if len(held) >= limit:
            break
        group = groups[keys[i]]
        if i not in held and len(held) + len(group) <= limit:
            held.update(group)
    if not held and limit > 0:  # every group is too big to move whole (a corpus of copies): item by item
        held = set(order[:limit])
    return held
