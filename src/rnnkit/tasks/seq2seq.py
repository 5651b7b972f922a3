"""Recurrent encoder-decoder with attention, and its decoders (greedy and batched beam search).

Model (Bahdanau et al. 2015 and Luong et al. 2015, "Effective Approaches to Attention-based
Neural Machine Translation", sec. 3): a bidirectional recurrent encoder of any cell and depth
reads the source; its final states, through a ``tanh`` bridge, start a recurrent decoder (a
stack of cells, one step at a time) that attends over the encoder outputs at each step:

* ``bahdanau``: the query is the previous top decoder state ``s_{t-1}``; the context ``c_t``
  is part of the decoder input: ``s_t = RNN([E y_{t-1}; c_t; h~_{t-1}], s_{t-1})``.
* ``luong_dot`` / ``luong_general``: ``s_t = RNN([E y_{t-1}; h~_{t-1}], s_{t-1})``, then the
  query is ``s_t``.

In both, the attentional vector is ``h~_t = tanh(W_c [s_t; c_t])`` and
``p(y_t) = softmax(W_o h~_t + b)`` over the outputs the decoder can produce: the scores of
``<pad>`` and ``<bos>`` are ``-inf`` (probability exactly 0) in training and decoding alike, and
label smoothing spreads only over the other ids. Input feeding (Luong sec. 3.3) passes ``h~_{t-1}`` into the
next step; with ``tie_embeddings`` ``W_o`` is the decoder's input embedding matrix (Press & Wolf
2017), so ``h~`` has the embedding size. Optional coverage (See et al. 2017, sec. 2.2) sums
earlier attention, feeds it into the score and adds ``sum_s min(a_ts, cov_ts)`` to the loss.

Shapes: ``B`` sentences, ``S`` source steps, ``T`` target steps, ``V`` target vocabulary,
``K`` beam size. Source padding is masked everywhere: attention weights are zero on it and the
encoder's final states are taken at each sentence's last real step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..cells import make_cell
from ..nn import recurrent_layer
from ..nn.attention import ATTENTIONS, make_attention
from ..scan.elementwise import tanh
from ..scan.step_matmul import linear

State = tuple[tuple[Tensor, ...], ...]  # per decoder layer, per state tensor: [B, size]


@dataclass
class Memory:
    """What the decoder reads at every step: encoder outputs, their key projection, the source mask."""

    keys: Tensor  # [B, S, 2H]
    projected: Tensor  # [B, S, A]
    mask: Tensor  # [B, S] bool, True on real source tokens

    def select(self, index: Tensor) -> Memory:
        return Memory(self.keys.index_select(0, index), self.projected.index_select(0, index),
                      self.mask.index_select(0, index))


@dataclass
class DecoderState:
    """The decoder's state between steps: cell states, the attentional vector ``h~_{t-1}``, coverage."""

    hidden: State
    feed: Tensor  # [B, D]
    coverage: Tensor | None = None  # [B, S]

    def select(self, index: Tensor) -> DecoderState:
        """Reorder (or repeat) the batch, e.g. to follow the surviving beams."""
        hidden = tuple(tuple(s.index_select(0, index) for s in layer) for layer in self.hidden)
        cov = None if self.coverage is None else self.coverage.index_select(0, index)
        return DecoderState(hidden, self.feed.index_select(0, index), cov)


class Seq2Seq(nn.Module):
    """Bidirectional recurrent encoder + attentional recurrent decoder.

    Args:
        source_vocab_size: Source ids ``0..V_src-1``.
        target_vocab_size: Target ids ``0..V-1``.
        cell: Cell name for encoder and decoder (see ``rnnkit.cells.CELLS``).
        embedding_dim: Embedding size (both sides).
        hidden_size: Encoder units per direction.
        num_layers: Encoder layers.
        decoder_hidden_size: Decoder units (default ``2 * hidden_size``).
        decoder_layers: Decoder layers.
        attention: ``"bahdanau"``, ``"luong_dot"`` or ``"luong_general"``.
        attention_size: Hidden width of additive attention (default decoder size).
        input_feeding: Feed ``h~_{t-1}`` into the next decoder step.
        coverage: Use a coverage vector in the attention score (and loss).
        tie_embeddings: Share the decoder's input embedding and output matrix.
        dropout: Dropout on embeddings, between layers and before the output layer.
        max_source_length: Longest source (in ids, end token included) the model accepts.
        pad_id: Padding id (both sides). bos_id: Start id. eos_id: End id.
    """

    def __init__(self, source_vocab_size: int, target_vocab_size: int, *, cell: str = "lstm",
                 embedding_dim: int = 256, hidden_size: int = 256, num_layers: int = 1,
                 decoder_hidden_size: int | None = None, decoder_layers: int = 1, attention: str = "bahdanau",
                 attention_size: int | None = None, input_feeding: bool = True, coverage: bool = False,
                 tie_embeddings: bool = True, dropout: float = 0.2, max_source_length: int = 100,
                 pad_id: int = 0, bos_id: int = 2, eos_id: int = 3) -> None:
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
        dec = decoder_hidden_size or 2 * hidden_size
        self.attention_kind, self.input_feeding, self.tie_embeddings = attention, input_feeding, tie_embeddings
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.max_source_length, self.dropout = max_source_length, dropout
        self.target_vocab_size = target_vocab_size
        # encoder
        self.source_embedding = nn.Embedding(source_vocab_size, embedding_dim, padding_idx=pad_id)
        self.encoder = recurrent_layer(cell, embedding_dim, hidden_size, num_layers=num_layers, bidirectional=True,
                                       dropout=dropout if num_layers > 1 else 0.0)
        keys = 2 * hidden_size
        enc_sizes = make_cell(cell, embedding_dim, hidden_size).state_sizes
        # decoder
        self.target_embedding = nn.Embedding(target_vocab_size, embedding_dim, padding_idx=pad_id)
        self.attentional_size = embedding_dim if tie_embeddings else dec
        bahdanau = attention == "bahdanau"
        in_size = embedding_dim + (keys if bahdanau else 0) + (self.attentional_size if input_feeding else 0)
        self.cells = nn.ModuleList(make_cell(cell, in_size if i == 0 else dec, dec) for i in range(decoder_layers))
        dec_sizes: tuple[int, ...] = tuple(make_cell(cell, dec, dec).state_sizes)
        self.state_sizes = dec_sizes
        if len(dec_sizes) != len(enc_sizes):
            raise ValueError(f"cell {cell!r} has state sizes {enc_sizes} and {dec_sizes} at two sizes")
        # bridge: both directions' top-layer final states -> every decoder layer's initial state
        self.bridge = nn.ModuleList(nn.Linear(2 * e, decoder_layers * d) for e, d in zip(enc_sizes, dec_sizes))
        self.attention = make_attention(attention, dec, keys, attention_size=attention_size, coverage=coverage)
        self.combine = nn.Linear(dec + keys, self.attentional_size, bias=False)  # W_c
        if tie_embeddings:
            self.output: nn.Linear | None = None
            self.output_bias = nn.Parameter(torch.zeros(target_vocab_size))
        else:
            self.output = nn.Linear(self.attentional_size, target_vocab_size)
        self.decoder_layers, self.decoder_hidden_size = decoder_layers, dec

    @property
    def coverage(self) -> bool:
        return self.attention.coverage

    # -- encoder -------------------------------------------------------------------------------
    def encode(self, source: Tensor, lengths: Tensor) -> tuple[Memory, DecoderState]:
        """Read ``source`` ``[B, S]`` (``lengths`` ``[B]``); return the memory and the decoder's first state."""
        mask = torch.arange(source.shape[1], device=source.device).unsqueeze(0) < lengths.unsqueeze(1)
        x = F.dropout(self.source_embedding(source), self.dropout, self.training)  # [B, S, E]
        keys, h_n = self.encoder(x, mask=mask)  # keys [B, S, 2H]; h_n [L*2, B, H] (or a tuple of them)
        parts = h_n if isinstance(h_n, tuple) else (h_n,)
        batch = source.shape[0]
        per_part = []
        for part, bridge, size in zip(parts, self.bridge, self.state_sizes):
            top = torch.cat([part[-2], part[-1]], -1)  # top layer, forward and backward: [B, 2H]
            per_part.append(tanh(bridge(top)).view(batch, self.decoder_layers, size))
        hidden = tuple(tuple(p[:, i] for p in per_part) for i in range(self.decoder_layers))
        feed = keys.new_zeros(batch, self.attentional_size)
        coverage = keys.new_zeros(keys.shape[:2]) if self.coverage else None
        return Memory(keys, self.attention.project_keys(keys), mask), DecoderState(hidden, feed, coverage)

    # -- decoder -------------------------------------------------------------------------------
    def _advance(self, embedded: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoder step from the embedded previous token ``[B, E]``: ``(h~_t [B, D], state, attention [B, S])``."""
        bahdanau = self.attention_kind == "bahdanau"
        inputs = [embedded]
        if bahdanau:  # query s_{t-1}: the first state tensor (h) of the top layer
            context, weights = self.attention(state.hidden[-1][0], memory.keys, memory.mask,
                                              projected_keys=memory.projected, coverage=state.coverage)
            inputs.append(context)
        if self.input_feeding:
            inputs.append(state.feed)
        layer_input = torch.cat(inputs, -1) if len(inputs) > 1 else inputs[0]
        new_hidden = []
        for i, cell in enumerate(self.cells):
            out, s = cell(layer_input, state.hidden[i])
            new_hidden.append(tuple(s))
            layer_input = F.dropout(out, self.dropout, self.training) if i < len(self.cells) - 1 else out
        if not bahdanau:  # query s_t
            context, weights = self.attention(layer_input, memory.keys, memory.mask,
                                              projected_keys=memory.projected, coverage=state.coverage)
        attentional = tanh(self.combine(torch.cat([layer_input, context], -1)))  # [B, D]
        coverage = None if state.coverage is None else state.coverage + weights
        return attentional, DecoderState(tuple(new_hidden), attentional, coverage), weights

    @property
    def invalid_output_ids(self) -> tuple[int, ...]:
        """Target ids the decoder can never produce: padding and the start token (``<unk>`` stays possible)."""
        return tuple(sorted({self.pad_id, self.bos_id}))

    def output_mask(self, device: torch.device | None = None) -> Tensor:
        """``[V]`` bool, True on the ids the decoder can never produce (:attr:`invalid_output_ids`)."""
        mask = torch.zeros(self.target_vocab_size, dtype=torch.bool, device=device)
        mask[list(self.invalid_output_ids)] = True
        return mask

    def logits(self, attentional: Tensor) -> Tensor:
        """Output scores ``[..., V]`` from attentional vectors ``[..., D]``.

        The scores of padding and the start token are ``-inf``: the softmax over them gives those
        ids probability exactly 0 and spreads all mass over the valid outputs. Training (:meth:`loss`),
        greedy and beam decoding (:meth:`step`) all read their scores from here.
        """
        x = F.dropout(attentional, self.dropout, self.training)
        # the output layer's products on the faster GEMM of this CPU (rnnkit.scan.step_matmul; F.linear elsewhere)
        if self.output is None:
            scores = linear(x, self.target_embedding.weight, self.output_bias)
        else:
            scores = linear(x, self.output.weight, self.output.bias)
        # in place, two columns: the linear layer's backward does not read its output, and a full-width
        # masked_fill would copy the [..., V] scores at every decoding step
        return scores.index_fill_(-1, self._invalid_index(scores.device), float("-inf"))

    def _invalid_index(self, device: torch.device) -> Tensor:
        """:attr:`invalid_output_ids` as a tensor on ``device``, made once (not in the state dict)."""
        cached = self.__dict__.get("_invalid_index_cache")
        if cached is None or cached.device != device:
            # made outside inference mode even when the first call runs under torch.inference_mode(): an
            # inference tensor cannot be saved for backward, and index_fill_ saves its index when training
            with torch.inference_mode(False):
                cached = torch.tensor(self.invalid_output_ids, dtype=torch.long, device=device)
            self.__dict__["_invalid_index_cache"] = cached
        return cached

    def step(self, previous: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor]:
        """Decode one step: ``previous`` token ids ``[B]`` -> ``(log_probs [B, V], state, attention [B, S])``.

        Padding and the start token can never be produced: their log-probabilities are ``-inf``
        (masked in :meth:`logits`) and the rest is normalised over the valid outputs.
        """
        attentional, state, weights = self._advance(self.target_embedding(previous), state, memory)
        return torch.log_softmax(self.logits(attentional), -1), state, weights

    def forward(self, source: Tensor, lengths: Tensor, target_in: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Teacher forcing: ``target_in`` ``[B, T]`` starts with ``<bos>``.

        Returns:
            ``(logits [B, T, V], attention [B, T, S], coverage penalty [B, T] or None)``; the logits
            are ``-inf`` on ``<pad>`` and ``<bos>`` (see :meth:`logits`).
        """
        memory, state = self.encode(source, lengths)
        embedded = F.dropout(self.target_embedding(target_in), self.dropout, self.training)  # [B, T, E]
        outs, attns, penalties = [], [], []
        for e_t in embedded.unbind(1):
            before = state.coverage
            attentional, state, weights = self._advance(e_t, state, memory)
            outs.append(attentional)
            attns.append(weights)
            if before is not None:
                penalties.append(torch.minimum(weights, before).sum(-1))
        logits = self.logits(torch.stack(outs, 1))  # [B, T, V]
        return logits, torch.stack(attns, 1), (torch.stack(penalties, 1) if penalties else None)

    def loss(self, source: Tensor, lengths: Tensor, target_in: Tensor, target_out: Tensor, *,
             label_smoothing: float = 0.0, coverage_weight: float = 1.0) -> Tensor:
        """Mean label-smoothed cross entropy per real target token (+ the coverage penalty when enabled).

        Smoothing spreads only over the outputs the decoder can produce (see :func:`smoothed_cross_entropy`);
        padded target positions (and any target that is an impossible output) are left out.
        """
        logits, _, penalty = self(source, lengths, target_in)
        invalid = self.output_mask(logits.device)
        real = ~invalid[target_out]  # [B, T]
        loss = smoothed_cross_entropy(logits, target_out, real, invalid, label_smoothing)
        if penalty is not None and coverage_weight:
            loss = loss + coverage_weight * (penalty * real).sum() / real.sum().clamp(min=1)
        return loss


def smoothed_cross_entropy(logits: Tensor, target: Tensor, real: Tensor, invalid: Tensor,
                           label_smoothing: float = 0.0) -> Tensor:
    """Label-smoothed cross entropy over the valid outputs, averaged over the real positions.

    With ``V' = V - |invalid|`` valid outputs and ``eps = label_smoothing``, each real position with
    target ``y`` costs ``-(1 - eps) log p(y) - (eps / V') sum_{c valid} log p(c)``, where ``p`` is
    the softmax of ``logits`` (whose invalid entries are ``-inf``, so ``p`` is 0 there): PyTorch's
    label smoothing with the uniform part over the ``V'`` valid outputs instead of all ``V``.

    Args:
        logits: ``[..., V]`` scores, ``-inf`` on the invalid outputs.
        target: ``[...]`` target ids.
        real: ``[...]`` bool, True where the position counts (False on padding).
        invalid: ``[V]`` bool, True on the outputs that can never be produced.
        label_smoothing: ``eps`` in ``[0, 1]``.
    """
    log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
    valid = ~invalid
    safe_target = torch.where(real, target, valid.long().argmax())  # a valid id on ignored positions: never -inf
    nll = -log_probs.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)
    per_token = nll
    if label_smoothing:
        uniform = -log_probs.masked_fill(invalid, 0.0).sum(-1) / valid.sum()
        per_token = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    per_token = per_token.masked_fill(~real, 0.0)
    return per_token.sum() / real.sum().clamp(min=1)


# -- decoding ----------------------------------------------------------------------------------
@dataclass
class Hypothesis:
    """One output sentence: ids (``<eos>`` excluded), total log-probability (``<eos>`` included),
    the length-normalised score used for ranking, and the attention ``[len + 1, S]`` per output step."""

    tokens: list[int]
    log_prob: float
    score: float
    attention: Tensor = field(repr=False)


def max_lengths(lengths: Tensor, ratio: float, offset: int) -> Tensor:
    """Most tokens to produce per sentence: ``floor(ratio * source length + offset)`` (at least 1)."""
    return (lengths.double() * ratio + offset).floor().long().clamp(min=1)


def normalized(log_prob: float, length: int, alpha: float) -> float:
    """Length normalisation: ``log_prob / length ** alpha`` (``alpha = 0``: raw log-probability)."""
    return log_prob / (max(length, 1) ** alpha)


def _force_eos(log_probs: Tensor, force: Tensor, eos_id: int) -> Tensor:
    """Only ``<eos>`` stays possible in rows where ``force`` is set (the length limit was reached)."""
    if not bool(force.any()):
        return log_probs
    blocked = force.unsqueeze(1).expand_as(log_probs).clone()
    blocked[:, eos_id] = False
    return log_probs.masked_fill(blocked, float("-inf"))


@torch.no_grad()
def greedy_search(model: Seq2Seq, source: Tensor, lengths: Tensor, *, max_length_ratio: float = 1.5,
                  max_length_offset: int = 10) -> list[Hypothesis]:
    """The most probable token at each step, for a batch of sentences at once.

    Returns:
        One :class:`Hypothesis` per sentence (``score`` is the raw log-probability).
    """
    memory, state = model.encode(source, lengths)
    return _greedy(model, memory, state, lengths, max_length_ratio, max_length_offset)


def _greedy(model: Seq2Seq, memory: Memory, state: DecoderState, lengths: Tensor, max_length_ratio: float,
            max_length_offset: int) -> list[Hypothesis]:
    """Greedy decoding from an encoded batch (see :func:`greedy_search`)."""
    device = memory.keys.device
    batch = memory.keys.shape[0]
    limit = max_lengths(lengths, max_length_ratio, max_length_offset).to(device)
    previous = torch.full((batch,), model.bos_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    total = torch.zeros(batch, dtype=torch.float64, device=device)
    tokens, attentions, live = [], [], []
    for t in range(int(limit.max()) + 1):
        log_probs, state, weights = model.step(previous, state, memory)
        log_probs = _force_eos(log_probs, t >= limit, model.eos_id)
        best_lp, best = log_probs.max(-1)
        total += torch.where(done, torch.zeros_like(best_lp), best_lp).double()
        live.append(~done)
        tokens.append(best)
        attentions.append(weights)
        done = done | (best == model.eos_id)
        if bool(done.all()):
            break
        previous = best
    ids = torch.stack(tokens, 1).tolist()
    alive = torch.stack(live, 1).sum(1).tolist()
    attn = torch.stack(attentions, 1)  # [B, T, S]
    out = []
    for b in range(batch):
        n = int(alive[b])  # steps taken, <eos> included
        seq = [i for i in ids[b][:n] if i != model.eos_id]
        out.append(Hypothesis(seq, float(total[b]), float(total[b]), attn[b, :n, : int(lengths[b])].cpu()))
    return out


@torch.no_grad()
def beam_search(model: Seq2Seq, source: Tensor, lengths: Tensor, *, beam_size: int = 5, nbest: int = 1,
                length_penalty: float = 1.0, max_length_ratio: float = 1.5,
                max_length_offset: int = 10) -> list[list[Hypothesis]]:
    """Beam search over a batch of sentences at once (``B * K`` rows through the decoder).

    At each step the ``2K`` best extensions of each sentence's ``K`` live hypotheses are ranked by
    total log-probability; extensions by ``<eos>`` among the top ``K`` are finished, the best ``K``
    others live on. Finished hypotheses are ranked by ``log_prob / length ** length_penalty``
    (length counts ``<eos>``). A sentence is done when no hypothesis is alive, when it reaches its
    length limit (``max_length_ratio * source length + max_length_offset`` tokens, after which only
    ``<eos>`` is allowed), or when it has ``K`` finished hypotheses and the best live one, scored at
    its current length, does not beat the ``K``-th finished one (exact for ``length_penalty=0``,
    where scores only fall; the usual heuristic otherwise). Stopping at the first ``K`` finished
    instead lets short, early ``<eos>`` endings end the search when label smoothing flattens the
    output distribution.

    The greedy output (decoded from the same encoding) is always a candidate too: pruning can
    drop the greedy path from the beam, and beam search alone then may return a sentence that
    scores lower than greedy decoding; with it, the best hypothesis never scores lower than the
    greedy one under the same length normalisation.

    Returns:
        Per sentence, the ``nbest`` best hypotheses, best first.
    """
    if beam_size < 1 or nbest < 1:
        raise ValueError(f"beam_size and nbest must be >= 1, got {beam_size} and {nbest}")
    if nbest > beam_size:
        raise ValueError(f"nbest ({nbest}) cannot exceed the beam size ({beam_size})")
    k, device = beam_size, source.device
    memory, state = model.encode(source, lengths)
    greedy = _greedy(model, memory, state, lengths, max_length_ratio, max_length_offset) if k > 1 else []
    batch = source.shape[0]
    repeat = torch.arange(batch, device=device).repeat_interleave(k)
    memory, state = memory.select(repeat), state.select(repeat)
    limit = max_lengths(lengths, max_length_ratio, max_length_offset).repeat_interleave(k)
    scores = torch.full((batch, k), float("-inf"), dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # one live hypothesis per sentence at the start
    previous = torch.full((batch * k,), model.bos_id, dtype=torch.long, device=device)
    history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
    attn_history = memory.keys.new_zeros(batch * k, 0, memory.keys.shape[1])
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    src_lengths = lengths.tolist()
    first_rows = (torch.arange(batch) * k).unsqueeze(1)
    for t in range(int(limit.max()) + 1):
        log_probs, state, weights = model.step(previous, state, memory)
        log_probs = _force_eos(log_probs, t >= limit, model.eos_id)
        vocab = log_probs.shape[-1]
        candidates = (scores.view(-1, 1) + log_probs.double()).view(batch, k * vocab)
        top_scores, top_index = (x.cpu() for x in candidates.topk(min(2 * k, k * vocab), dim=1))
        top_rows, top_token = first_rows + top_index // vocab, top_index % vocab
        # the bookkeeping of every sentence at once: ranked candidates of unfinished sentences,
        # <eos> among the top K ends a hypothesis, the first K others live on (in rank order)
        active = ~done.unsqueeze(1) & (top_scores > float("-inf"))
        is_eos = top_token == model.eos_id
        live = active & ~is_eos
        slot = live.long().cumsum(1) - 1
        keep = live & (slot < k)
        ended = active & is_eos & (torch.arange(top_scores.shape[1]) < k).unsqueeze(0)
        next_scores = torch.full((batch, k), float("-inf"), dtype=torch.float64)
        next_rows = first_rows.expand(batch, k).clone()  # dead slots (score -inf) follow any row
        next_tokens = torch.full((batch, k), model.eos_id, dtype=torch.long)
        sent, rank = keep.nonzero(as_tuple=True)
        where = (sent, slot[sent, rank])
        next_scores[where], next_rows[where], next_tokens[where] = (top_scores[sent, rank], top_rows[sent, rank],
                                                                    top_token[sent, rank])
        for b, rank_ in ended.nonzero().tolist():
            row, score = int(top_rows[b, rank_]), float(top_scores[b, rank_])
            seq = history[row].tolist()
            attn = torch.cat([attn_history[row], weights[row].unsqueeze(0)], 0)
            finished[b].append(Hypothesis(seq, score, normalized(score, len(seq) + 1, length_penalty),
                                          attn[:, : int(src_lengths[b])].cpu()))
        done |= keep.sum(1) == 0
        for b in (~done).nonzero().flatten().tolist():
            if len(finished[b]) >= k:
                kth_best = sorted((h.score for h in finished[b]), reverse=True)[k - 1]
                done[b] = normalized(float(next_scores[b, 0]), t + 1, length_penalty) <= kth_best
        if bool(done.all()):
            break
        rows = next_rows.view(-1).to(device)
        state = state.select(rows)
        previous = next_tokens.view(-1).to(device)
        history = torch.cat([history.index_select(0, rows), previous.unsqueeze(1)], 1)
        attn_history = torch.cat([attn_history.index_select(0, rows), weights.index_select(0, rows).unsqueeze(1)], 1)
        scores = next_scores.to(device)
    results = []
    for b in range(batch):
        if greedy and all(h.tokens != greedy[b].tokens for h in finished[b]):
            g = greedy[b]
            finished[b].append(Hypothesis(g.tokens, g.log_prob, normalized(g.log_prob, len(g.tokens) + 1,
                                                                           length_penalty), g.attention))
        ranked = sorted(finished[b], key=lambda h: h.score, reverse=True)
        results.append(ranked[:nbest])
    return results

