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
        count: How many to hold out. With no duplicates exactly ``min(count, len(order) - keep)``,
            the first of ``order``; with duplicates, whole groups until ``count`` is reached, which
            may pass it by less than the last group's size.
        keep: How many of ``order`` must stay out of the held-out set (a group that would leave
            fewer is skipped). Where no group fits (a corpus of one text repeated), the first
            ``min(count, len(order) - keep)`` items are held out one by one, copies or not.

    Returns:
        The held-out indices.
    """
    groups: dict[Hashable, list[int]] = {}
    for i in order:
        groups.setdefault(keys[i], []).append(i)
    room = len(order) - keep
    held: set[int] = set()
    for i in order:
        if len(held) >= min(count, room):
            break
        if i in held:
            continue
        group = groups[keys[i]]
        if len(held) + len(group) <= room:
            held.update(group)
    if not held and min(count, room) > 0:  # every group is too big to move whole (a corpus of copies): item by item
        held = set(order[:min(count, room)])
    return held
