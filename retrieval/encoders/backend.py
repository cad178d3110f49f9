"""What the SPLADE and dense encoders share: a tokenizer, a backend (torch or ONNX Runtime), length batching.

In: texts. Out: one float32 row per text from ``_forward`` — SPLADE's (V,) term weights, dense's (H,) unit
vector — which each encoder turns into what its index stores.

- ``torch`` (the reference): the checkpoint in eager PyTorch fp32; a query runs on the process's torch threads
  (``threads`` at load), index encoding on ``index_threads`` (``data.threads.torch_threads``).
- ``onnx``: the exported graph (``onnx_model``): a query on one ONNX Runtime session with ``threads``
  intra-op threads; index encoding as ``index_threads`` one-thread runs side by side.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np

from data.days import Progress
from retrieval.cache import LruCache
from retrieval.config import DenseSettings, SpladeSettings
from retrieval.encoders.batching import encode_inputs, length_batches
from retrieval.encoders.loading import load_pretrained, resolve
from retrieval.encoders.onnx_export import Pooling, precision_identity, quantisation
from retrieval.encoders.tokenizer import TextTokenizer, load_tokenizer
from retrieval.errors import NotBuiltError

if TYPE_CHECKING:
    from distributed import Client


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
        self._tokenizer: TextTokenizer | None = None
        self._model: Any = None  # torch backend: the torch module
        self._onnx: Any = None  # onnx backend: an OnnxEncoderModel
        self.cache: LruCache[str, Any] = LruCache(cache_size)  # query text -> its encoding

    def default_path(self) -> Path:
        raise NotImplementedError

    @property
    def name_or_path(self) -> str:
        return resolve(self.settings.model, self.default_path())

    @property
    def quantised(self) -> bool:
        """int8 weights: the ONNX backend with ``int8`` set (torch always runs fp32)."""
        return self.settings.backend == "onnx" and self.settings.int8

    def precision(self) -> str:
        """What an index fingerprint records of the precision: '' for fp32 (torch and ONNX agree)."""
        return precision_identity(self.quantisation())

    def quantisation(self) -> dict | None:
        """How the ONNX graph is quantised (None: fp32), from the settings."""
        s = self.settings
        return quantisation(self.quantised, s.fp32_layers, s.fp32_feed_forward_out, s.smoothing)

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
                self.quantisation(),
                self.onnx_cache_dir or default_cache_dir(),
                threads=self.threads,
            )
        else:
            _, model = load_pretrained(self.name_or_path, self.torch_loader, self.threads)
            self._tokenizer = load_tokenizer(self.name_or_path)  # the same ids as the ONNX backend's
            self._model = self._torch_module(model)
        return self

    def _torch_module(self, model: Any) -> Any:
        """The torch backend's module, made from the loaded checkpoint."""
        return model

    def _torch_forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            raise NotBuiltError(f"{type(self).__name__} is not loaded: call load() first")
        return self._tokenizer

    def _require_loaded(self) -> None:
        if not self.is_loaded:
            raise NotBuiltError(f"{type(self).__name__} is not loaded: call load() first")

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """(B, L) int64 ids and mask -> (B, D) float32: ONNX on the query threads, torch on the process's."""
        if self._onnx is not None:
            return self._onnx.run(input_ids, attention_mask, self.threads)
        return self._torch_forward(input_ids, attention_mask)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        """(B, D) for a few texts in order (queries, comparisons); one at a time when int8 (batch_size)."""
        self._require_loaded()
        if self.quantised and len(texts) > 1:
            return np.concatenate([self._encode([t]) for t in texts])
        ids, mask = encode_inputs(self.tokenizer, texts, self.settings.max_length)
        return self._forward(ids, mask)

    @property
    def batch_size(self) -> int:
        """Passages per forward pass at index time: 1 for int8, ``settings.batch_size`` otherwise.

        int8 dynamic quantisation scales a MatMul's activations by the min and max of the whole input
        tensor, so batch-mates (and their padding) would change a passage's vector, and a passage would not
        encode as it does alone. One passage per run also needs no padding, and ran as fast as batches of 8
        or 16 here (dense 54 vs 45 passages/s, SPLADE 96 vs 100, one thread).
        """
        return 1 if self.quantised else self.settings.batch_size

    def _on_engine(self, engine: Client, texts: Sequence[str], progress: Progress | None, label: str) -> Any:
        """The rows of ``texts``, encoded in shards on the engine's workers (``encoders.sharded``)."""
        from retrieval.encoders.sharded import encode_on_engine

        return encode_on_engine(engine, self, list(texts), progress=progress, label=label).rows

    def _encode_batches(
        self,
        texts: Sequence[str],
        sink: Callable[[np.ndarray, np.ndarray], None],
        progress: Progress | None,
        label: str,
    ) -> None:
        """Encode passages in token-length-sorted batches on ``index_threads``; ``sink(positions, rows)``.

        torch: one batch at a time on ``index_threads`` intra-op threads (the reference, as before). ONNX:
        ``index_threads`` one-thread runs side by side on one session; small models gain more from that
        than from splitting each matrix product, and the sink (SPLADE's pruning, in Python) overlaps them.
        """
        self._require_loaded()
        batches = length_batches(self.tokenizer, texts, self.settings.max_length, self.batch_size)
        done = 0

        def report(positions: np.ndarray, rows: np.ndarray) -> None:
            nonlocal done
            sink(positions, rows)
            done += len(positions)
            if progress:
                progress(label, done, len(texts))

        if self._onnx is None:
            from data.threads import torch_threads

            with torch_threads(self.index_threads):
                for positions, ids, mask in batches:
                    report(positions, self._torch_forward(ids, mask))
            return
        onnx = self._onnx
        with ThreadPoolExecutor(max_workers=self.index_threads, thread_name_prefix="encode") as pool:
            pending: deque[tuple[np.ndarray, Future[np.ndarray]]] = deque()
            for positions, ids, mask in batches:
                pending.append((positions, pool.submit(onnx.run, ids, mask, 1)))
                if len(pending) >= 2 * self.index_threads:  # a bounded window: batches are made lazily
                    done_positions, future = pending.popleft()
                    report(done_positions, future.result())
            while pending:
                done_positions, future = pending.popleft()
                report(done_positions, future.result())
