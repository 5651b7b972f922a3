"""Linear-chain conditional random field (Lafferty et al. 2001; as used by Lample et al. 2016).

Score of a tag sequence ``y`` for emissions ``E [T, K]``:

.. math::
    s(y) = \\pi_{y_1} + \\sum_t E_{t, y_t} + \\sum_{t>1} A_{y_{t-1}, y_t} + \\omega_{y_T},\\qquad
    \\log p(y) = s(y) - \\log \\sum_{y'} \\exp s(y')

The partition function (forward algorithm) and the best path (Viterbi) are computed with tensor
operations over the whole batch, one vectorised step per time step. Transitions that the tag
scheme forbids (``O`` then ``I-PER`` in IOB2, say) can be masked out: they get a score of
``-10000`` so no decoded path uses them (unless no allowed path of that length exists; constraints
that allow no path of any length are an error).

Padded positions (``mask`` False) are never read: any emission there (even ``inf`` or ``NaN``) and
any tag id there (``-100``, say) leaves every output and gradient unchanged. Half and bfloat16
inputs or parameters are computed in float32 and the results cast back.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FORBIDDEN = -1.0e4


def allowed_transitions(tags: list[str], scheme: str) -> tuple[Tensor, Tensor, Tensor]:
    """Which transitions a chunk tag scheme allows: ``(start [K], transitions [K, K], end [K])`` bools.

    ``scheme`` is ``IOB2`` or ``BIOES`` (``IOB1`` allows almost everything and is left unconstrained).
    Tags that are not chunk tags (``O`` and anything without a ``X-`` or ``X_`` prefix) may go anywhere.
    """
    def parse(tag: str) -> tuple[str, str]:
        if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESL":  # B-PER or B_PER, as the CoNLL reader takes them
            return tag[0], tag[2:]
        return "O", ""

    k = len(tags)
    start = torch.ones(k, dtype=torch.bool)
    end = torch.ones(k, dtype=torch.bool)
    trans = torch.ones(k, k, dtype=torch.bool)
    scheme = scheme.upper()
    if scheme not in ("IOB2", "BIOES"):
        return start, trans, end
    parsed = [parse(t) for t in tags]
    for j, (pj, lj) in enumerate(parsed):
        if pj in ("I", "E"):
            start[j] = False
        if scheme == "BIOES" and pj in ("B", "I"):
            end[j] = False
        for i, (pi, li) in enumerate(parsed):
            if scheme == "IOB2":
                ok = pj != "I" or (pi in ("B", "I") and li == lj)
            else:
                inside = pi in ("B", "I")  # a chunk is open after B or I
                ok = (pj in ("I", "E")) == inside and (not inside or li == lj)
            trans[i, j] = ok
    return start, trans, end


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    Args:
        num_tags: number of tags ``K``.
        constraints: optional ``(start, transitions, end)`` boolean masks from
            :func:`allowed_transitions`; forbidden moves are never decoded.

    Shapes: emissions ``[B, T, K]``, tags ``[B, T]`` (long), mask ``[B, T]`` bool, right-padded
    (``mask[:, 0]`` must be True for every non-empty sequence).
    """

    start_ok: Tensor
    transitions_ok: Tensor
    end_ok: Tensor

    def __init__(self, num_tags: int, constraints: tuple[Tensor, Tensor, Tensor] | None = None) -> None:
        super().__init__()
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"CRF num_tags must be a positive integer, got {num_tags!r}")
        self.num_tags = num_tags
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.end = nn.Parameter(torch.zeros(num_tags))
        if constraints is None:
            constraints = (torch.ones(num_tags, dtype=torch.bool), torch.ones(num_tags, num_tags, dtype=torch.bool),
                           torch.ones(num_tags, dtype=torch.bool))
        start_ok, trans_ok, end_ok = constraints
        for what, t, shape in (("start", start_ok, (num_tags,)), ("transitions", trans_ok, (num_tags, num_tags)),
                               ("end", end_ok, (num_tags,))):
            if tuple(t.shape) != shape or t.dtype != torch.bool:
                raise ValueError(f"CRF constraints: {what} must be a bool tensor of shape {list(shape)}, got "
                                 f"{t.dtype} of shape {list(t.shape)} (see allowed_transitions)")
        reach = start_ok.clone()  # tags some allowed path can be in; a path of any length must end allowed
        for _ in range(num_tags):
            reach = reach | (reach.unsqueeze(1) & trans_ok).any(0)
        if not bool((reach & end_ok).any()):
            raise ValueError("CRF constraints allow no tag path of any length (no allowed start tag reaches an "
                             "allowed end tag); check the tag list and scheme given to allowed_transitions")
        self.register_buffer("start_ok", start_ok.clone())
        self.register_buffer("transitions_ok", trans_ok.clone())
        self.register_buffer("end_ok", end_ok.clone())

    def _check(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> None:
        """One-line ``ValueError`` for inputs the recursions would silently misread. The value checks
        (right padding, tag range) run only on CPU tensors: on a GPU they would cost a sync per call."""
        k = self.num_tags
        if emissions.dim() != 3 or emissions.shape[-1] != k:
            raise ValueError(f"CRF expects emissions of shape [batch, time, {k}], got {list(emissions.shape)}")
        if emissions.shape[1] == 0:
            raise ValueError("CRF emissions have no time steps; drop empty batches (or give each batch >= 1 step)")
        if tuple(mask.shape) != tuple(emissions.shape[:2]) or mask.dtype != torch.bool:
            raise ValueError(f"CRF mask must be a bool tensor of shape {list(emissions.shape[:2])}, got {mask.dtype} "
                             f"of shape {list(mask.shape)}")
        if tags is not None and (tuple(tags.shape) != tuple(emissions.shape[:2])
                                 or tags.dtype.is_floating_point or tags.dtype == torch.bool):
            raise ValueError(f"CRF tags must be an integer tensor of shape {list(emissions.shape[:2])}, got "
                             f"{tags.dtype} of shape {list(tags.shape)}")
        if mask.device.type == "cpu" and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("CRF mask must be right-padded (each row: real steps first, then padding); "
                             "left padding or gaps would be scored wrongly")
        if tags is not None and tags.device.type == "cpu" and tags.numel():
            real = tags[mask]
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= k):
                raise ValueError(f"CRF tags must be in [0, {k}), got values from {int(real.min())} to "
                                 f"{int(real.max())}")

    def _scores(self, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor]:
        dtype = dtype or self.start.dtype
        forbidden = torch.tensor(FORBIDDEN, dtype=dtype, device=self.start.device)
        return (torch.where(self.start_ok, self.start.to(dtype), forbidden),
                torch.where(self.transitions_ok, self.transitions.to(dtype), forbidden),
                torch.where(self.end_ok, self.end.to(dtype), forbidden))

    def _prepare(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, torch.dtype]:
        """Emissions in the working dtype (float32 for half/bfloat16) with padded positions zeroed,
        so garbage there (``inf``, ``NaN``) cannot reach a real position's output or gradient; and
        the dtype the results are returned in."""
        out = torch.promote_types(emissions.dtype, self.start.dtype)
        work = torch.float32 if out in (torch.float16, torch.bfloat16) else out
        return emissions.to(work).masked_fill(~mask.unsqueeze(2), 0.0), out

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """``log Z`` per sequence (forward algorithm), ``[B]``."""
        self._check(emissions, mask)
        work, out = self._prepare(emissions, mask)
        return self._log_partition(work, mask).to(out)

    def _log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        start, trans, end = self._scores(emissions.dtype)
        alpha = start + emissions[:, 0]  # [B, K]
        for t in range(1, emissions.shape[1]):
            step = torch.logsumexp(alpha.unsqueeze(2) + trans + emissions[:, t].unsqueeze(1), dim=1)  # [B, K]
            alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
        log_z = torch.logsumexp(alpha + end, dim=1)
        return torch.where(mask[:, 0], log_z, torch.zeros_like(log_z))  # an empty sequence: log 1

    @torch.no_grad()
    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """``p(y_t = k | emissions)`` for every step and tag, ``[B, T, K]`` (forward-backward).

        ``exp(alpha_t + beta_t - log Z)``, with ``alpha`` the forward and ``beta`` the backward
        log-scores, both vectorised over the batch (``log Z`` taken per step as the logsumexp of
        ``alpha_t + beta_t`` over tags, for accuracy); padded steps and empty sequences get 0.
        """
        self._check(emissions, mask)
        emissions, out = self._prepare(emissions, mask)
        start, trans, end = self._scores(emissions.dtype)
        steps = emissions.shape[1]
        alphas = [start + emissions[:, 0]]  # [B, K] each
        for t in range(1, steps):
            step = torch.logsumexp(alphas[-1].unsqueeze(2) + trans + emissions[:, t].unsqueeze(1), dim=1)
            alphas.append(torch.where(mask[:, t].unsqueeze(1), step, alphas[-1]))
        betas = [end.expand_as(alphas[-1])]  # beta at the last real step is the end score
        for t in range(steps - 2, -1, -1):
            step = torch.logsumexp(trans + (emissions[:, t + 1] + betas[-1]).unsqueeze(1), dim=2)  # [B, from]
            betas.append(torch.where(mask[:, t + 1].unsqueeze(1), step, end.expand_as(step)))
        joint = torch.stack(alphas, 1) + torch.stack(betas[::-1], 1)  # log Z + log p(y_t = k), [B, T, K]
        # normalise each step by its own logsumexp (= log Z, mathematically): subtracting one global
        # log Z of size ~1e4 after T = 2000 steps left float32 marginals 4% off
        log_marginal = joint - torch.logsumexp(joint, dim=2, keepdim=True)
        return (log_marginal.exp() * mask.unsqueeze(2).to(emissions.dtype)).to(out)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Unnormalised score ``s(y)`` of the given tag sequences, ``[B]``."""
        self._check(emissions, mask, tags)
        work, out = self._prepare(emissions, mask)
        return self._score(work, tags, mask).to(out)

    def _score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Expects :meth:`_prepare`'d emissions; tags on padded positions may be anything."""
        start, trans, end = self._scores(emissions.dtype)
        tags = tags.long().masked_fill(~mask, 0)
        maskf = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # [B, T]
        total = start[tags[:, 0]] + (emitted * maskf).sum(1)
        if tags.shape[1] > 1:
            total = total + (trans[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return total + end[last]

    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """``log p(tags | emissions)`` per sequence, ``[B]`` (0 for empty sequences)."""
        self._check(emissions, mask, tags)
        return self._log_likelihood(emissions, tags, mask)

    def _log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        work, out = self._prepare(emissions, mask)
        nonempty = mask[:, 0]
        ll = self._score(work, tags, mask) - self._log_partition(work, mask)
        return (ll * nonempty.to(ll.dtype)).to(out)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Mean negative log-likelihood over the non-empty sequences of the batch."""
        self._check(emissions, mask, tags)
        count = mask[:, 0].sum().clamp(min=1)
        return -self._log_likelihood(emissions, tags, mask).sum() / count

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> tuple[list[list[int]], Tensor]:
        """Viterbi: the best tag sequence of each sequence (its real steps only) and its score
        (``[]`` and 0 for an empty sequence; ties go to the lowest tag id)."""
        self._check(emissions, mask)
        emissions, out = self._prepare(emissions, mask)
        start, trans, end = self._scores(emissions.dtype)
        batch, steps, k = emissions.shape
        score = start + emissions[:, 0]
        keep = torch.arange(k, device=emissions.device).expand(batch, k)
        pointers = []
        for t in range(1, steps):
            total = score.unsqueeze(2) + trans  # [B, from, to]
            best, arg = total.max(dim=1)
            valid = mask[:, t].unsqueeze(1)
            score = torch.where(valid, best + emissions[:, t], score)
            pointers.append(torch.where(valid, arg, keep))  # padded steps point to themselves
        score = score + end
        best_score, last = score.max(dim=1)
        path = [last]
        for back in reversed(pointers):
            last = back.gather(1, last.unsqueeze(1)).squeeze(1)
            path.append(last)
        tags = torch.stack(path[::-1], 1)  # [B, T]
        lengths = mask.sum(1).tolist()
        best_score = torch.where(mask[:, 0], best_score, torch.zeros_like(best_score)).to(out)
        return [tags[b, :n].tolist() for b, n in enumerate(lengths)], best_score
