"""Held-out dev sets that keep duplicates on one side.

A corpus often holds the same text more than once (a repeated review, a CoNLL score line, a
translation pair in two places). Drawn item by item, a held-out dev set then shares items with
training, and the model is selected on texts it was trained on. :func:`take_whole_groups`
draws whole groups of equal items instead: an item and all its copies go to dev together.
:func:`class_quotas` says how many dev examples each class gives, so a stratified dev set has every
class in proportion and never takes a class's last training example.
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


def class_quotas(sizes: Sequence[int], total: int, ties: Sequence[int]) -> list[int]:
    """How many of ``total`` held-out examples each class gives (a stratified dev set).

    Each class gives its share ``size * total / n`` rounded down, and the classes with the largest
    remainders one more each (ties: the smaller ``ties`` value first, e.g. the class's first place
    in the seeded order), so the quotas add up to ``total``. A class never gives its last example:
    where one would, the extra goes to the next remainder (``total`` is then reached only when the
    other classes have examples to spare, several extra each if need be).

    Args:
        sizes: Examples per class.
        total: How many to hold out in all.
        ties: One number per class, to order equal remainders.

    Returns:
        The quota of each class, in the order of ``sizes``.
    """
    n = max(sum(sizes), 1)
    quotas = [min(size * total // n, max(size - 1, 0)) for size in sizes]
    spare = total - sum(quotas)
    # remainders compared exactly, as numerators over n (as floats, equal ones differ in their last bits)
    ranked = sorted(range(len(sizes)), key=lambda c: (-(sizes[c] * total - quotas[c] * n), ties[c]))
    while spare > 0:  # by remainder, as often as needed: small classes that cannot give pass it on
        givers = [c for c in ranked if quotas[c] < sizes[c] - 1][:spare]
        if not givers:
            break
        for c in givers:
            quotas[c] += 1
        spare -= len(givers)
    return quotas
