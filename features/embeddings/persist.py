"""Save and load a trained M3 as a ``data.artifacts`` version: ``weights.safetensors`` and ``blocks.json``
(the item vocabulary, in row order), with dims, settings, data range and metrics in the manifest's
``metadata``. Never pickle.

A model directory is an ``ArtifactStore``: one folder per version under ``versions/``, and ``state.json``
naming the current version, the one that refresh and serving use.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.torch import load_file, save_file

from data.artifacts import Artifact, ArtifactStore, verify
from features.embeddings.config import EmbeddingSettings
from features.embeddings.errors import ModelFormatError
from features.embeddings.model import M3

KIND = "m3"
WEIGHTS, BLOCKS = "weights.safetensors", "blocks.json"


@dataclass
class SavedModel:
    model: M3
    block_ids: np.ndarray  # (B,) block i is the model's item i + 1
    manifest: dict[str, Any]
    settings: EmbeddingSettings  # those it was trained with

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
    """Write a new version into the store at ``model_dir`` and return its folder. The version is a digest of
    the weights and vocabulary, so the same model always gets the same name (saving it again replaces it)."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].numpy().tobytes())
    digest.update("\n".join(block_ids.tolist()).encode())
    version = f"m3-{digest.hexdigest()[:12]}"

    def write(folder: Path) -> list[str]:
        save_file(state, str(folder / WEIGHTS))
        (folder / BLOCKS).write_text(json.dumps(block_ids.tolist()) + "\n", encoding="utf-8")
        return [WEIGHTS, BLOCKS]

    metadata = {
        "dims": {"dim": model.dim, "n_items": model.n_items},
        "settings": settings.model_dump(mode="json"),
        **(extra or {}),
    }
    store = ArtifactStore(model_dir)
    store.write(Artifact(KIND, write, metadata), version=version)
    if make_current:
        store.make_current(version)
    return store.folder(version)


def load_model(folder: Path) -> SavedModel:
    """Restore a model written by ``save_model``, its files checked against their checksums (safetensors
    only; nothing is unpickled)."""
    manifest = verify(folder, KIND)
    meta = manifest["metadata"]
    s = EmbeddingSettings.model_validate(meta["settings"])
    model = M3(
        n_items=meta["dims"]["n_items"],
        dim=meta["dims"]["dim"],
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
    return SavedModel(model, block_ids, manifest, s)


def load_current(model_dir: Path) -> SavedModel:
    """The current version of the store at ``model_dir``."""
    store = ArtifactStore(model_dir)
    version = store.current()
    if version is None:
        raise ModelFormatError(
            f"no trained M3 model in {model_dir} (no current version); run `smartblock train user-embeddings`"
        )
    return load_model(store.folder(version))
