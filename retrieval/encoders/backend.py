"""What the SPLADE and dense encoders share: a tokenizer, a backend (torch or ONNX Runtime), length batching.

In: texts. Out: one float32 row per text from ``_forward`` — SPLADE's (V,) term weights, dense's (H,) unit
vector — which each encoder turns into what its index stores.

- ``torch`` (the reference): the checkpoint in eager PyTorch fp32; a query runs on the process's torch threads
  (``threads`` at load), index encoding on ``index_threads`` (``data.threads.torch_threads``).
- ``onnx``: the exported graph (``onnx_model``), one ONNX Runtime session on ``threads`` intra-op threads for
  queries and one on ``index_threads`` for index encoding, dropped when that is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from data.days import Progress
from retrieval.config import DenseSettings, SpladeSettings
from retrieval.encoders.batching import encode_inputs, length_batches
from retrieval.encoders.loading import load_pretrained, load_tokenizer, resolve
from retrieval.encoders.onnx_export import Pooling
from retrieval.errors import NotBuiltError


class TransformerEncoder:
    """Base of ``SpladeEncoder`` and ``DenseEncoder``; subclasses give the pooling and the torch forward."""

    pooling: ClassVar[Pooling]
    torch_loader: ClassVar[str]  # the transformers Auto class of the checkpoint

    def __init__(
        self,
        settings: SpladeSettings | DenseSettings,
        *,
        cache_size: int = 0,
        threads: int = 1,
        index_threads: int = 1,
        onnx_cache_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.cache_size = cache_size
        self.threads = threads  # a query: one worker's share of the machine
        self.index_threads = index_threads  # encode_documents: a batch job
        self.onnx_cache_dir = onnx_cache_dir  # None: onnx_model.default_cache_dir()
        self._tokenizer: Any = None
        self._model: Any = None  # torch backend: the torch module
        self._onnx: Any = None  # onnx backend: an OnnxEncoderModel

    def default_path(self) -> Path:
        raise NotImplementedError

    @property
    def name_or_path(self) -> str:
        return resolve(self.settings.model, self.default_path())

    @property
    def quantised(self) -> bool:
        """int8 weights: the ONNX backend with ``int8`` set (torch always runs fp32)."""
        return self.settings.backend == "onnx" and self.settings.int8

    @property
    def is_loaded(self) -> bool:
        return self._model is not None or self._onnx is not None

    def load(self) -> Self:
        """Tokenizer and model of the configured backend; the ONNX graph is exported on a cache miss."""
        if self.settings.backend == "onnx":
            from retrieval.encoders.onnx_model import OnnxEncoderModel, default_cache_dir

            self._tokenizer = load_tokenizer(self.name_or_path)
            self._onnx = OnnxEncoderModel.load(
                self.name_or_path,
                self.pooling,
                self.settings.int8,
                self.onnx_cache_dir or default_cache_dir(),
                threads=self.threads,
            )
        else:
            self._tokenizer, model = load_pretrained(self.name_or_path, self.torch_loader, self.threads)
            self._model = self._torch_module(model)
        return self

    def _torch_module(self, model: Any) -> Any:
        """The torch backend's module, made from the loaded checkpoint."""
        return model

    def _torch_forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _require_loaded(self) -> None:
        if not self.is_loaded:
            raise NotBuiltError(f"{type(self).__name__} is not loaded: call load() first")

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray, *, batch: bool) -> np.ndarray:
        """(B, L) int64 ids and mask -> (B, D) float32, on the query's or the batch job's threads."""
        if self._onnx is not None:
            threads = self.index_threads if batch else self.threads
            return self._onnx.run(input_ids, attention_mask, threads, batch=batch)
        return self._torch_forward(input_ids, attention_mask)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """(B, D) for a few texts in their order (queries)."""
        self._require_loaded()
        ids, mask = encode_inputs(self._tokenizer, texts, self.settings.max_length)
        return self._forward(ids, mask, batch=False)

    def _batch_threads(self) -> AbstractContextManager[Any]:
        if self._model is not None:
            from data.threads import torch_threads

            return torch_threads(self.index_threads)
        return nullcontext()

    def _encode_batches(
        self,
        texts: Sequence[str],
        sink: Callable[[np.ndarray, np.ndarray], None],
        progress: Progress | None,
        label: str,
    ) -> None:
        """Encode passages in length-sorted batches on ``index_threads``; ``sink(positions, (b, D) rows)``."""
        self._require_loaded()
        done = 0
        try:
            with self._batch_threads():
                batches = length_batches(
                    self._tokenizer, texts, self.settings.max_length, self.settings.batch_size
                )
                for positions, ids, mask in batches:
                    sink(positions, self._forward(ids, mask, batch=True))
                    done += len(positions)
                    if progress:
                        progress(label, done, len(texts))
        finally:
            if self._onnx is not None:
                self._onnx.release(self.index_threads, batch=True)
