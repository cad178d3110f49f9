"""Dense sentence encoder: transformer token states, mean-pooled over real tokens, L2-normalised.

With unit vectors, inner product equals cosine similarity, so FAISS inner-product indexes rank by cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from data.days import Progress
from data.threads import torch_threads
from retrieval.cache import LruCache
from retrieval.config import DenseSettings
from retrieval.encoders.loading import default_dense_path, load_pretrained, model_identity, resolve
from retrieval.errors import NotBuiltError


class DenseEncoder:
    def __init__(
        self, settings: DenseSettings, *, cache_size: int = 0, threads: int = 1, index_threads: int = 1
    ) -> None:
        self.settings = settings
        self.cache_size = cache_size
        self.threads = threads  # a query: one worker's share of the machine
        self.index_threads = index_threads  # encode_documents: a batch job
        self._tokenizer: Any = None
        self._model: Any = None
        self.cache: LruCache[str, np.ndarray] = LruCache(cache_size)

    @property
    def name_or_path(self) -> str:
        return resolve(self.settings.model, default_dense_path())

    def identity(self) -> str:
        return f"dense[{model_identity(self.name_or_path)};len={self.settings.max_length}]"

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def load(self) -> DenseEncoder:
        self._tokenizer, self._model = load_pretrained(self.name_or_path, "AutoModel", self.threads)
        return self

    @property
    def dim(self) -> int:
        if self._model is None:
            raise NotBuiltError("DenseEncoder is not loaded: call load() first")
        return int(self._model.config.hidden_size)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if self._model is None:
            raise NotBuiltError("DenseEncoder is not loaded: call load() first")
        enc = self._tokenizer(
            list(texts),
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=self.settings.max_length,
        )
        with torch.inference_mode():
            states = self._model(**enc).last_hidden_state  # (B, L, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)  # (B, L, 1)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
            unit = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return unit.numpy().astype(np.float32)

    def encode_query(self, query: str) -> np.ndarray:
        """(H,) unit vector; cached by the exact text."""
        return self.cache.get_or_compute(query, lambda q: self._encode([q])[0])

    def encode_documents(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """(N, H) unit vectors, in batches of similar length."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        bs = self.settings.batch_size
        with torch_threads(self.index_threads):
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                out[idx] = self._encode([texts[i] for i in idx])
                if progress:
                    progress("dense encode", min(start + bs, len(texts)), len(texts))
        return out
