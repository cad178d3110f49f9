"""SPLADE: a masked-language model turned into sparse term weights (Formal et al., SIGIR 2021).

For a text with tokens t_1..t_L and MLM logits z (L, V), the weight of vocabulary term j is
``w_j = max_i log(1 + relu(z_ij))`` over the non-padding tokens. Weights are quantised to integers
(``round(w * scale)``) because Lucene impact indexes store integer term frequencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data.days import Progress
from data.threads import torch_threads
from retrieval.cache import LruCache
from retrieval.config import SpladeSettings
from retrieval.encoders.loading import default_splade_path, load_pretrained, model_identity, resolve
from retrieval.errors import NotBuiltError

SparseVector = dict[str, int]


class SpladeEncoder:
    """Encodes queries and documents into ``{term: int weight}``; documents keep their top terms only."""

    def __init__(
        self, settings: SpladeSettings, *, cache_size: int = 0, threads: int = 1, index_threads: int = 1
    ) -> None:
        self.settings = settings
        self.cache_size = cache_size
        self.threads = threads  # a query: one worker's share of the machine
        self.index_threads = index_threads  # encode_documents: a batch job
        self._tokenizer: Any = None
        self._model: Any = None
        self._vocab: list[str] = []
        self.cache: LruCache[str, SparseVector] = LruCache(cache_size)

    @property
    def name_or_path(self) -> str:
        return resolve(self.settings.model, default_splade_path())

    def identity(self) -> str:
        """What the index fingerprint records about this encoder (checkpoint digest and quantisation)."""
        s = self.settings
        return (
            f"splade[{model_identity(self.name_or_path)};len={s.max_length};top={s.doc_max_terms};"
            f"min={s.min_weight};scale={s.scale}]"
        )

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def load(self) -> SpladeEncoder:
        self._tokenizer, self._model = load_pretrained(
            self.name_or_path, "AutoModelForMaskedLM", self.threads
        )
        vocab = self._tokenizer.get_vocab()
        self._vocab = [""] * len(vocab)
        for term, idx in vocab.items():
            self._vocab[idx] = term
        return self

    def _weights(self, texts: Sequence[str]) -> Any:
        import torch

        if self._model is None:
            raise NotBuiltError("SpladeEncoder is not loaded: call load() first")
        enc = self._tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.settings.max_length,
        )
        mask = enc["attention_mask"].bool()  # (B, L)
        with torch.inference_mode():
            # max_i log1p(relu(z_ij)) == log1p(relu(max_i z_ij)) (both are monotone): take the max of the
            # raw logits and apply the activation to (B, V) instead of (B, L, V).
            if hasattr(self._model, "cls") and hasattr(self._model, "base_model"):
                # BERT-family fast path: the vocabulary head (the costly part) runs on real tokens only.
                states = self._model.base_model(**enc).last_hidden_state  # (B, L, H)
                logits = self._model.cls(states[mask])  # (T, V), T = real tokens in the batch
                lengths = mask.sum(dim=1).tolist()
                best = torch.stack([part.amax(dim=0) for part in torch.split(logits, lengths)])  # (B, V)
            else:
                logits = self._model(**enc).logits  # (B, L, V)
                best = logits.masked_fill_(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, V)
            return torch.log1p(torch.relu(best))

    def _to_sparse(self, weights: Any, top: int | None) -> SparseVector:
        import torch

        s = self.settings
        keep = torch.nonzero(weights >= max(s.min_weight, 1e-9)).squeeze(-1)
        values = weights[keep]
        if top is not None and len(values) > top:
            best = torch.topk(values, top).indices
            keep, values = keep[best], values[best]
        out: SparseVector = {}
        for idx, w in zip(keep.tolist(), values.tolist(), strict=True):
            q = round(w * s.scale)
            if q > 0:
                out[self._vocab[idx]] = q
        return out

    def encode_query(self, query: str) -> SparseVector:
        """All of a query's terms (queries are short), quantised; cached by the exact text."""
        return self.cache.get_or_compute(query, lambda q: self._to_sparse(self._weights([q])[0], None))

    def encode_documents(self, texts: Sequence[str], progress: Progress | None = None) -> list[SparseVector]:
        """Documents in batches, longest first (less padding), each pruned to ``doc_max_terms`` terms."""
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list[SparseVector] = [{}] * len(texts)
        bs = self.settings.batch_size
        with torch_threads(self.index_threads):
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                weights = self._weights([texts[i] for i in idx])
                for row, i in enumerate(idx):
                    out[i] = self._to_sparse(weights[row], self.settings.doc_max_terms)
                if progress:
                    progress("splade encode", min(start + bs, len(texts)), len(texts))
        return out
