"""Dense sentence encoder: transformer token states, mean-pooled over real tokens, L2-normalised.

With unit vectors, inner product equals cosine similarity, so FAISS inner-product indexes rank by cosine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from data.days import Progress
from retrieval.cache import LruCache
from retrieval.config import DenseSettings
from retrieval.encoders.backend import TransformerEncoder
from retrieval.encoders.loading import default_dense_path, model_identity
from retrieval.encoders.onnx_export import Pooling
from retrieval.errors import NotBuiltError

if TYPE_CHECKING:
    from distributed import Client


class DenseEncoder(TransformerEncoder):
    pooling: ClassVar[Pooling] = "mean"
    torch_loader: ClassVar[str] = "AutoModel"
    settings: DenseSettings
    cache: LruCache[str, np.ndarray]

    def default_path(self) -> Path:
        return default_dense_path()

    def identity(self) -> str:
        """What the index fingerprint records: checkpoint digest, length, and int8 weights when quantised."""
        return f"dense[{model_identity(self.name_or_path)};len={self.settings.max_length}{self.precision()}]"

    @property
    def dim(self) -> int:
        if self._onnx is not None:
            return self._onnx.dim
        if self._model is None:
            raise NotBuiltError("DenseEncoder is not loaded: call load() first")
        return int(self._model.encoder.config.hidden_size)

    def _torch_module(self, model: Any) -> Any:
        from retrieval.encoders.pooling import MeanPooling

        return MeanPooling(model).eval()

    def _torch_forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            unit = self._model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))  # (B, H)
        return unit.numpy().astype(np.float32)

    def encode_query(self, query: str) -> np.ndarray:
        """(H,) unit vector; cached by the exact text."""
        return self.cache.get_or_compute(query, lambda q: self._encode([q])[0])

    def encode_documents(
        self, texts: Sequence[str], progress: Progress | None = None, engine: Client | None = None
    ) -> np.ndarray:
        """(N, H) unit vectors in the order of ``texts``, encoded in batches of similar token length.

        With ``engine`` (a Dask client), in shards on its workers: the same vectors.
        """
        if engine is not None:
            return self._on_engine(engine, texts, progress, "dense encode")
        self._require_loaded()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)

        def sink(positions: np.ndarray, vectors: np.ndarray) -> None:
            out[positions] = vectors

        self._encode_batches(texts, sink, progress, "dense encode")
        return out
