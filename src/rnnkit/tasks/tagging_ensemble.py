"""Several trained taggers deciding together (``rnnkit evaluate RUN --ensemble RUN ...``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..nn.crf import CRF
from .tagging import CONFIG_KEYS, Tagger, TrainedTagger

__all__ = ["CONFIG_KEYS", "TaggerEnsemble"]


class TaggerEnsemble(Tagger):
    """Several trained taggers deciding together: the tag sequence they find most probable on average.

    Each member reads the sentence with its own vocabularies and model. The ensemble decodes the
    ``y`` that maximises the members' mean log-probability ``(1/M) sum_m log p_m(y | x)``, the
    normalised geometric mean of their distributions. For a CRF member ``log p_m(y | x)`` is its
    score of ``y`` minus ``log Z_m(x)``, a constant per sentence, so Viterbi over the mean
    emissions and the mean start, transition and end scores finds that ``y`` exactly; a softmax
    member adds its per-token log-softmax and no transitions. Token scores are the marginals of the
    mean distribution. Members must share the tags, the files' scheme and the model scheme (runs
    of one recipe with other seeds or settings do); the first member's data settings read files.
    With any CRF member, the scheme's transition constraints apply. Members may differ in
    ``data.document_context``: each reads a file's sentences as it was trained to, and each
    sentence is decoded from the members' mean scores of its tokens (with context, a member's
    scores are conditioned on the neighbouring sentences too).
    """

    def __init__(self, members: Sequence[TrainedTagger], batch_size: int = 64) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one trained tagging run")
        first = members[0]
        for member in members[1:]:
            mine, theirs = sorted(first.prep.tags), sorted(member.prep.tags)
            if mine != theirs:
                raise ValueError(f"ensemble members must share their tags: {', '.join(mine)} against "
                                 f"{', '.join(theirs)}; combine runs trained on the same tag column")
            schemes = (first.prep.file_scheme, first.prep.model_scheme)
            if (member.prep.file_scheme, member.prep.model_scheme) != schemes:
                raise ValueError(f"ensemble members must share the tag schemes (files {schemes[0]}, model "
                                 f"{schemes[1]} against {member.prep.file_scheme}, {member.prep.model_scheme}); "
                                 "combine runs trained with the same data.scheme and data.train_scheme")
        self.members, self.prep, self.batch_size = list(members), first.prep, batch_size
        # order[m][k]: member m's index of the ensemble's tag k (members may list tags in any order).
        self.order = [torch.tensor([m.prep.tags.index(t) for t in first.prep.tags]) for m in members]
        crfs = [(m.model.crf, order) for m, order in zip(self.members, self.order) if m.model.crf is not None]
        self.crf: CRF | None = None
        if crfs:
            self.crf = CRF(len(first.prep.tags), first.prep.constraints())
            with torch.no_grad():
                for name in ("start", "transitions", "end"):
                    total = sum(self._reordered(getattr(crf, name), order) for crf, order in crfs)
                    getattr(self.crf, name).copy_(total / len(self.members))
            self.crf.eval()

    @staticmethod
    def _reordered(scores: Tensor, order: Tensor) -> Tensor:
        return scores[order][:, order] if scores.dim() == 2 else scores[order]

    @classmethod
    def load(cls, run_dirs: Sequence[str | Path]) -> TaggerEnsemble:
        """An ensemble of the tagging runs in ``run_dirs``."""
        return cls([TrainedTagger.load(r) for r in run_dirs])

    @property
    def _crf(self) -> CRF | None:
        return self.crf

    def _document_context(self) -> bool:
        return any(m.prep.cfg.document_context for m in self.members)

    def _sentence_emissions(self, sentences: Sequence[Sequence[str]], documents: Sequence[int]) -> list[Tensor]:
        per_member = [[self._log_scores(m, order, x) for x in m._sentence_emissions(sentences, documents)]
                      for m, order in zip(self.members, self.order)]
        return [sum(scores) / len(self.members) for scores in zip(*per_member)]  # type: ignore[misc]

    def _emissions(self, sentences: Sequence[Sequence[str]]) -> tuple[Tensor, Tensor]:
        scores, lengths = [], torch.zeros(0, dtype=torch.long)
        for member, order in zip(self.members, self.order):
            emissions, lengths = member._emissions(sentences)
            scores.append(self._log_scores(member, order, emissions))
        return torch.stack(scores).mean(0), lengths

    @staticmethod
    def _log_scores(member: TrainedTagger, order: Tensor, emissions: Tensor) -> Tensor:
        """A member's scores in the ensemble's tag order: CRF emissions as they are, a softmax's log-probabilities."""
        emissions = emissions[..., order]
        return emissions if member.model.crf is not None else emissions.log_softmax(-1)
