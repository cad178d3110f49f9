"""SPLADE: a masked-language model turned into sparse term weights (Formal et al., SIGIR 2021).

For a text with tokens t_1..t_L and MLM logits z (L, V), the weight of vocabulary term j is
``w_j = max_i log(1 + relu(z_ij))`` over the non-padding tokens. Weights are quantised to integers
(``round(w * scale)``) because Lucene impact indexes store integer term frequencies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Self

import numpy as np

from data.days import Progress
from retrieval.cache import LruCache
from retrieval.config import SpladeSettings
from retrieval.encoders.backend import TransformerEncoder
from retrieval.encoders.loading import default_splade_path, model_identity
from retrieval.encoders.onnx_export import Pooling

if TYPE_CHECKING:
    from distributed import Client

SparseVector = dict[str, int]


class SpladeEncoder(TransformerEncoder):
    """Encodes queries and documents into ``{term: int weight}``; documents keep their top terms only."""

    pooling: ClassVar[Pooling] = "splade"
    torch_loader: ClassVar[str] = "AutoModelForMaskedLM"
    settings: SpladeSettings
    cache: LruCache[str, SparseVector]
    _vocab: tuple[str, ...] = ()  # term of each vocabulary id, set by load

    def default_path(self) -> Path:
        return default_splade_path()

    def identity(self) -> str:
        """What the index fingerprint records about this encoder (checkpoint digest and quantisation).

        The backend itself is not recorded (torch and ONNX fp32 compute the same weights); int8 weights are.
        """
        s = self.settings
        return (
            f"splade[{model_identity(self.name_or_path)};len={s.max_length};top={s.doc_max_terms};"
            f"min={s.min_weight};scale={s.scale}{self.precision()}]"
        )

    def load(self) -> Self:
        super().load()
        vocab = self.tokenizer.get_vocab()
        terms = [""] * len(vocab)
        for term, idx in vocab.items():
            terms[idx] = term
        self._vocab = tuple(terms)
        return self

    def _torch_forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        ids, attention = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        mask = attention.bool()  # (B, L)
        with torch.inference_mode():
            # max_i log1p(relu(z_ij)) == log1p(relu(max_i z_ij)) (both are monotone): take the max of the
            # raw logits and apply the activation to (B, V) instead of (B, L, V).
            if hasattr(self._model, "cls") and hasattr(self._model, "base_model"):
                # BERT-family fast path: the vocabulary head (the costly part) runs on real tokens only.
                states = self._model.base_model(input_ids=ids, attention_mask=attention).last_hidden_state
                logits = self._model.cls(states[mask])  # (T, V), T = real tokens in the batch
                lengths = mask.sum(dim=1).tolist()
                best = torch.stack([part.amax(dim=0) for part in torch.split(logits, lengths)])  # (B, V)
            else:
                logits = self._model(input_ids=ids, attention_mask=attention).logits  # (B, L, V)
                best = logits.masked_fill_(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)  # (B, V)
            return torch.log1p(torch.relu(best)).numpy()

    def _to_sparse(self, weights: np.ndarray, top: int | None) -> SparseVector:
        """(V,) float weights -> ``{term: round(w * scale)}``, the ``top`` heaviest when given."""
        s = self.settings
        keep = np.flatnonzero(weights >= max(s.min_weight, 1e-9))
        values = weights[keep]
        if top is not None and len(values) > top:
            best = np.argsort(-values, kind="stable")[:top]
            keep, values = keep[best], values[best]
        out: SparseVector = {}
        for idx, w in zip(keep.tolist(), values.tolist(), strict=True):
            q = round(w * s.scale)
            if q > 0:
                out[self._vocab[idx]] = q
        return out

    def weights(self, texts: Sequence[str]) -> np.ndarray:
        """(B, V) float32 term weights before pruning and integer quantisation (for comparisons)."""
        return self._encode(texts)

    def encode_query(self, query: str) -> SparseVector:
        """All of a query's terms (queries are short), quantised; cached by the exact text."""
        return self.cache.get_or_compute(query, lambda q: self._to_sparse(self._encode([q])[0], None))

    def encode_documents(
        self, texts: Sequence[str], progress: Progress | None = None, engine: Client | None = None
    ) -> list[SparseVector]:
        """Documents in batches of similar token length, each pruned to ``doc_max_terms`` terms, in order.

        With ``engine`` (a Dask client), in shards on its workers: the same vectors.
        """
        if engine is not None:
            return self._on_engine(engine, texts, progress, "splade encode")
        out: list[SparseVector] = [{}] * len(texts)

        def sink(positions: np.ndarray, weights: np.ndarray) -> None:
            for row, i in enumerate(positions.tolist()):
                out[i] = self._to_sparse(weights[row], self.settings.doc_max_terms)

        self._encode_batches(texts, sink, progress, "splade encode")
        return out
