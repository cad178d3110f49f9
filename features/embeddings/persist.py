"""Save and load a trained M3: ``weights.safetensors``, ``blocks.json`` (the item vocabulary, in row order)
and ``manifest.json`` (version, dims, data range, metrics). Never pickle.

A model directory holds one folder per version and ``CURRENT``, the version that refresh and serving use.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from features.embeddings.config import EmbeddingSettings
from features.embeddings.errors import ModelFormatError
from features.embeddings.model import M3

FORMAT_VERSION = 1
WEIGHTS, BLOCKS, MANIFEST, CURRENT = "weights.safetensors", "blocks.json", "manifest.json", "CURRENT"


@dataclass
class SavedModel:
    model: M3
    block_ids: np.ndarray  # (B,) block i is the model's item i + 1
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest["version"])


def save_model(
    model: M3,
    block_ids: np.ndarray,
    model_dir: Path,
    settings: EmbeddingSettings,
    *,
    extra: dict[str, Any] | None = None,
    make_current: bool = True,
) -> Path:
    """Write a new version folder under ``model_dir``; the version is a digest of the weights and vocabulary,
    so the same model always gets the same name. Returns the folder."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].numpy().tobytes())
    digest.update("\n".join(block_ids.tolist()).encode())
    version = f"m3-{digest.hexdigest()[:12]}"
    folder = model_dir / version
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS))
    (folder / BLOCKS).write_text(json.dumps(block_ids.tolist()) + "\n", encoding="utf-8")
    manifest = {
        "format": FORMAT_VERSION,
        "model": "m3",
        "version": version,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dims": {"dim": model.dim, "n_items": model.n_items},
        "settings": settings.model_dump(mode="json"),
        "files": [WEIGHTS, BLOCKS],
        **(extra or {}),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if make_current:
        (model_dir / CURRENT).write_text(version + "\n", encoding="utf-8")
    return folder


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{folder} is not a saved M3 model: {MANIFEST} is missing") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path} is not valid JSON: {exc}") from None
    if manifest.get("model") != "m3" or manifest.get("format") != FORMAT_VERSION:
        raise ModelFormatError(
            f"{path}: expected model 'm3' format {FORMAT_VERSION}, got model {manifest.get('model')!r} "
            f"format {manifest.get('format')!r}"
        )
    return manifest


def load_model(folder: Path) -> SavedModel:
    """Restore a model written by ``save_model`` (safetensors only; nothing is unpickled)."""
    manifest = read_manifest(folder)
    for name in manifest["files"]:
        if not (folder / name).is_file():
            raise ModelFormatError(f"{folder}: the manifest lists {name}, which is missing")
    s = EmbeddingSettings.model_validate(manifest["settings"])
    model = M3(
        n_items=manifest["dims"]["n_items"],
        dim=manifest["dims"]["dim"],
        short_items=s.short_items,
        mid_items=s.mid_items,
        dropout=s.dropout,
    )
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)))
    except RuntimeError as exc:  # shape or key mismatch between the manifest and the weights
        raise ModelFormatError(f"{folder / WEIGHTS} does not match its manifest: {exc}") from None
    model.eval()
    block_ids = np.array(json.loads((folder / BLOCKS).read_text(encoding="utf-8")), dtype=object)
    if len(block_ids) + 1 != model.n_items:
        raise ModelFormatError(
            f"{folder / BLOCKS} lists {len(block_ids)} blocks, weights have {model.n_items - 1}"
        )
    return SavedModel(model, block_ids, manifest)


def load_current(model_dir: Path) -> SavedModel:
    """The version named in ``model_dir/CURRENT``."""
    pointer = model_dir / CURRENT
    if not pointer.is_file():
        raise ModelFormatError(
            f"no trained M3 model in {model_dir} (no {CURRENT} file); run `smartblock train user-embeddings`"
        )
    return load_model(model_dir / pointer.read_text(encoding="utf-8").strip())
