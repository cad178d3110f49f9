"""Exported encoder graphs on ONNX Runtime: taken from a disk cache (exported into it on a miss), few threads.

The cache holds one folder per fingerprint, ``<cache_dir>/<pooling>-<fp32|int8>-<digest>/``, with
``model.onnx`` and ``fingerprint.json`` (written last, as for the retrieval indexes: see
``retrieval.fingerprint``).
The fingerprint names everything the file depends on: the checkpoint (``model_identity``), the pooling, the
code that exports it, the quantisation, the opset and optimisation level, the torch / onnx / onnxruntime
versions, the machine type and its CPU's vector extensions (ORT_ENABLE_ALL may save ops laid out for them: a
cache folder on a shared home is not reused by a CPU of another kind). It also records the model
file's size and sha256: a file cut short or changed on disk is caught before ONNX Runtime reads it, logged,
and exported again.

Each session runs on a fixed number of intra-op threads: a query on the encoder's ``threads``, so a serving
worker never takes more cores than it owns; index encoding on ``index_threads`` one-thread runs at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import fingerprint
from retrieval.encoders.loading import model_identity
from retrieval.encoders.onnx_export import INPUTS, OPSET, OUTPUT, SMOOTHING_FILES, Pooling, files_digest
from retrieval.errors import ModelLoadError

FORMAT_VERSION = 1
MODEL_FILE = "model.onnx"
_FILE_KEYS = ("model_bytes", "model_sha256")  # what finish() adds to the expected fingerprint

log = logging.getLogger("smartblock.retrieval")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/smartblock/onnx``, else ``~/.cache/smartblock/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "smartblock" / "onnx"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def export_code() -> str:
    """A digest of the code that writes the graph (pooling heads, export steps, the smoothing and its
    calibration texts): changing any of it re-exports."""
    return files_digest("pooling.py", "onnx_export.py", *SMOOTHING_FILES)[:16]


# The CPU extensions ONNX Runtime's x86 kernels choose between (Linux's /proc/cpuinfo names).
_ISA_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


def cpu_extensions() -> list[str]:
    """Which of ``_ISA_FLAGS`` this CPU has (empty where /proc/cpuinfo is not there to read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in _ISA_FLAGS if flag in present]
    return []


def cache_fingerprint(name_or_path: str, pooling: Pooling, quantised: dict | None) -> dict:
    """What an exported graph depends on; versions come from package metadata, so this imports no torch."""
    return {
        "format": FORMAT_VERSION,
        "kind": "onnx-encoder",
        "model": model_identity(name_or_path),
        "pooling": pooling,
        "export_code": export_code(),
        "quantisation": quantised,
        "opset": OPSET,
        "optimisation": "ORT_ENABLE_ALL",
        "torch": _version("torch"),
        "onnx": _version("onnx"),
        "onnxruntime": _version("onnxruntime"),
        "machine": platform.machine(),
        "cpu": cpu_extensions(),
    }


def cache_folder(cache_dir: Path, expected: dict) -> Path:
    digest = hashlib.sha256(json.dumps(expected, sort_keys=True).encode()).hexdigest()[:16]
    precision = "int8" if expected["quantisation"] else "fp32"
    return cache_dir / f"{expected['pooling']}-{precision}-{digest}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def damage(folder: Path, expected: dict) -> str | None:
    """None when ``folder`` holds a complete, unchanged export for ``expected``; else what is wrong."""
    found = fingerprint.read(folder)
    if found is None:
        return "no fingerprint.json (never finished, or damaged)"
    if {k: v for k, v in found.items() if k not in _FILE_KEYS} != expected:
        return "its fingerprint differs in " + ", ".join(fingerprint.differences(found, expected))
    model = folder / MODEL_FILE
    if not model.is_file():
        return f"{MODEL_FILE} is missing"
    size = model.stat().st_size
    if size != found.get("model_bytes"):
        return f"{MODEL_FILE} has {size} bytes, {found.get('model_bytes')} were written"
    if _sha256(model) != found.get("model_sha256"):
        return f"{MODEL_FILE} differs from what was written (sha256)"
    return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (serving workers start together) and threads."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = path.open("a")
    except OSError as exc:
        raise ModelLoadError(
            f"the ONNX encoder cache {path.parent} is not writable ({exc}): set retrieval.onnx_cache_dir "
            "or use the torch backend"
        ) from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached_model(
    name_or_path: str, pooling: Pooling, quantised: dict | None, cache_dir: Path, *, rebuild: bool = False
) -> Path:
    """The path of a verified ONNX graph for these options: reused from the cache, or exported into it first.

    A damaged cache entry is logged and exported again; ``rebuild`` forces that (ONNX Runtime refused it).
    """
    from retrieval.encoders import onnx_export

    expected = cache_fingerprint(name_or_path, pooling, quantised)
    folder = cache_folder(cache_dir, expected)
    with _locked(folder.with_name(folder.name + ".lock")):
        problem = "ONNX Runtime could not load it" if rebuild else damage(folder, expected)
        if problem is None:
            return folder / MODEL_FILE
        if folder.exists():
            log.warning("ONNX encoder cache %s is damaged (%s): exporting it again", folder, problem)
            shutil.rmtree(folder)  # the folder is keyed by the fingerprint: nothing else lives there
        else:
            log.info(
                "no ONNX export of %s (%s) in the cache yet: exporting it to %s",
                name_or_path,
                pooling,
                folder,
            )
        fingerprint.prepare(folder, expected, overwrite=False, what="ONNX encoder")
        try:
            model = onnx_export.build(name_or_path, pooling, quantised, folder)
        except Exception as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise ModelLoadError(f"cannot export {name_or_path} to ONNX ({pooling}): {exc}") from exc
        fingerprint.finish(
            folder, {**expected, "model_bytes": model.stat().st_size, "model_sha256": _sha256(model)}
        )
        return model


class OnnxEncoderModel:
    """One exported graph and its ONNX Runtime sessions, one per intra-op thread count (made on first use).

    ``run(input_ids, attention_mask, threads)``: (B, L) int64 arrays -> (B, D) float32 vectors. A session
    may run on several Python threads at once (ONNX Runtime allows it and releases the GIL): index encoding
    runs ``index_threads`` one-thread runs side by side on the same session.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls, name_or_path: str, pooling: Pooling, quantised: dict | None, cache_dir: Path, *, threads: int
    ) -> OnnxEncoderModel:
        """From the cache (exported on a miss), with the query session (``threads``) ready."""
        path = cached_model(name_or_path, pooling, quantised, cache_dir)
        try:
            model = cls(path)
            model.session(threads)
        except ModelLoadError:
            # Checksums pass but the runtime refuses the file (say, a broken export): export once more.
            log.warning("ONNX Runtime refused %s: exporting it again", path)
            model = cls(cached_model(name_or_path, pooling, quantised, cache_dir, rebuild=True))
            model.session(threads)
        return model

    def session(self, threads: int) -> Any:
        """The session on ``threads`` intra-op threads (and no inter-op pool)."""
        with self._lock:
            if threads not in self._sessions:
                self._sessions[threads] = self._new_session(threads)
            return self._sessions[threads]

    def _new_session(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The file is already optimised (ORT_ENABLE_ALL, saved at export): loading skips that work again.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # Pool threads (threads > 1) that spin between queries would burn cores other workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise ModelLoadError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc

    @property
    def dim(self) -> int:
        """D, the width of the output vectors."""
        session = next(iter(self._sessions.values()))
        return int(session.get_outputs()[0].shape[1])

    def run(self, input_ids: np.ndarray, attention_mask: np.ndarray, threads: int) -> np.ndarray:
        feeds = dict(zip(INPUTS, (input_ids, attention_mask), strict=True))
        return self.session(threads).run([OUTPUT], feeds)[0]
