"""One on-disk format for every trained model (rankers, M3 user embeddings): a version folder with a
``manifest.json``, written atomically, listed and pointed at by a store, and checked on every load.

A store holds one model line (the rankers' ``ranker``, M3's model folder)::

    <root>/versions/<version>/manifest.json   and the model's own files
    <root>/state.json                         {"current": "v0002", "history": ["v0001", "v0002"]}

``history`` lists the versions made current, in order, so ``rollback`` can step back. The manifest::

    {"format": 2, "kind": "lgbm", "version": "v0002", "created": "2026-01-02T03:04:05Z",
     "smartblock_version": "0.1.0",
     "files": {"model.txt": {"sha256": "9f86d081...", "size": 48213}},
     "metadata": {...}}          # the model's own entries: parameters, schema, metrics, data range

A version is written under a hidden temporary name and renamed into place once complete, so no reader sees
half of one. Loading checks every listed file's size and sha256 (``verify``), so a truncated or altered
file, including one a crash left unflushed, is refused by name instead of loading as another model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from data.errors import ModelFormatError
from data.io import write_atomic

MANIFEST = "manifest.json"
STATE = "state.json"
VERSIONS = "versions"
# Format 1 was the rankers' and M3's separate manifests, without checksums: refused, never migrated.
FORMAT_VERSION = 2
_VERSION_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # no leading dot: those are temporaries
_NUMBERED = re.compile(r"^v(\d+)$")


@dataclass(frozen=True)
class Artifact:
    """A trained model ready to be written as a version.

    Attributes:
        kind: the model type ("lgbm", "m3", ...), checked by loaders.
        write: writes the model's files into the folder it is given and returns their names (relative).
        metadata: the model's own manifest entries (JSON-serialisable; numpy scalars are converted).
    """

    kind: str
    write: Callable[[Path], Iterable[str]]
    metadata: Mapping[str, Any]


# Versions -----------------------------------------------------------------------------------------------


def write_version(folder: Path | str, artifact: Artifact, *, replace: bool = False) -> dict[str, Any]:
    """Write ``artifact`` as a complete version into ``folder``: its files, then a manifest with their
    checksums, in a temporary sibling renamed into place.

    Args:
        folder: the version folder; its name becomes the manifest's ``version``.
        artifact: what to write.
        replace: replace a version saved in ``folder``; without it an existing ``folder`` raises
            ``FileExistsError``.

    Returns:
        the manifest written.
    """
    folder = Path(folder)
    if folder.exists():
        if not replace:
            raise FileExistsError(f"{folder} exists")
        if not (folder / MANIFEST).is_file() and any(folder.iterdir()):
            raise ModelFormatError(f"refusing to replace {folder}: it holds files but no saved model")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        names = list(artifact.write(tmp))
        manifest = {
            "format": FORMAT_VERSION,
            "kind": artifact.kind,
            "version": folder.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "smartblock_version": _package_version(),
            "files": {name: _describe(tmp, name) for name in names},
            "metadata": dict(artifact.metadata),
        }
        text = json.dumps(manifest, indent=2, default=_json_default) + "\n"
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        _move_into_place(tmp, folder, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return json.loads(text)


def read_manifest(folder: Path | str, kind: str | None = None) -> dict[str, Any]:
    """The manifest of the version in ``folder``, checked for shape (and ``kind`` when given), files unread:
    for listing and describing. Loaders call ``verify`` instead."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFormatError(f"{folder} is not a saved model: {MANIFEST} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{path}: not a manifest (a JSON object was expected)")
    found = manifest.get("format")
    if found != FORMAT_VERSION:
        if isinstance(found, int) and found < FORMAT_VERSION:
            raise ModelFormatError(
                f"{folder} was saved by an older smartblock (manifest format {found}, without checksums); "
                f"this version reads format {FORMAT_VERSION}: train and save the model again"
            )
        raise ModelFormatError(f"{path}: manifest format {found!r}, this code reads {FORMAT_VERSION}")
    _check_shape(path, manifest)
    if kind is not None and manifest["kind"] != kind:
        raise ModelFormatError(f"{folder} holds a '{manifest['kind']}' model, not '{kind}'")
    return manifest


def verify(folder: Path | str, kind: str | None = None) -> dict[str, Any]:
    """The manifest of the version in ``folder`` after checking the size and sha256 of every file it lists;
    a missing or differing file raises ``ModelFormatError`` naming it. What every loader calls first."""
    folder = Path(folder)
    manifest = read_manifest(folder, kind)
    for name, want in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ModelFormatError(f"{folder}: the manifest lists {name}, which is missing")
        size = path.stat().st_size
        if size != want["size"]:
            raise ModelFormatError(
                f"{path}: {size} bytes where the manifest says {want['size']}: "
                "the file was changed or cut short after saving"
            )
        digest = _sha256(path)
        if digest != want["sha256"]:
            raise ModelFormatError(
                f"{path}: sha256 {digest[:16]}... differs from the manifest's {want['sha256'][:16]}...: "
                "the file was changed after saving"
            )
    return manifest


# A store of versions ------------------------------------------------------------------------------------


class ArtifactStore:
    """The versions of one model line under ``root`` and its current pointer (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Saved versions, by name (temporaries and folders without a manifest left out)."""
        folder = self.root / VERSIONS
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if self.exists(p.name))

    def exists(self, version: str) -> bool:
        return bool(_VERSION_NAME.match(version)) and (self.folder(version) / MANIFEST).is_file()

    def folder(self, version: str) -> Path:
        return self.root / VERSIONS / version

    def write(self, artifact: Artifact, *, version: str | None = None) -> str:
        """Save ``artifact`` as a version (not made current) and return the version's name.

        Without ``version`` it is numbered after the highest numbered one (``v0001``, ``v0002``, ...); two
        writers racing for a number both succeed, one with the next. A given ``version`` replaces a saved
        one of that name (for names derived from the content, where it is the same model again).
        """
        if version is not None:
            if not _VERSION_NAME.match(version):
                raise ModelFormatError(f"'{version}' is not a version name (letters, digits, '_', '-', '.')")
            write_version(self.folder(version), artifact, replace=True)
            return version
        numbers = [int(m.group(1)) for v in self.versions() if (m := _NUMBERED.match(v))]
        number = max(numbers, default=0) + 1
        while True:
            name = f"v{number:04d}"
            try:
                write_version(self.folder(name), artifact)
                return name
            except FileExistsError:
                number += 1

    def current(self) -> str | None:
        return self._state()["current"]

    def history(self) -> list[str]:
        """The versions made current, oldest first (the last is current)."""
        return list(self._state()["history"])

    def make_current(self, version: str) -> None:
        """Point ``current`` at ``version``, appended to the history (no change if it is current already)."""
        if not self.exists(version):
            raise ModelFormatError(f"{self.root} has no saved version '{version}'")
        state = self._state()
        if state["current"] != version:
            self._write_state({"current": version, "history": [*state["history"], version]})

    def rollback(self) -> str | None:
        """Make the previously current version current again and return it; None (and no change) when no
        version was current before this one."""
        history = self._state()["history"]
        if len(history) < 2:
            return None
        self._write_state({"current": history[-2], "history": history[:-1]})
        return history[-2]

    def _state(self) -> dict[str, Any]:
        path = self.root / STATE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"current": None, "history": []}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFormatError(f"{path}: unreadable ({exc})") from None
        if (
            not isinstance(state, dict)
            or not isinstance(state.get("history"), list)
            or "current" not in state
            or not isinstance(state["current"], str | None)
        ):
            raise ModelFormatError(f"{path}: expected {{'current': version or null, 'history': [versions]}}")
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.root / STATE, state)


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``path`` through a temporary file and a rename: a reader sees the old or the new file, never
    half of one."""
    text = json.dumps(payload, indent=2, default=_json_default) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


# Internals ----------------------------------------------------------------------------------------------


def _move_into_place(tmp: Path, folder: Path, replace: bool) -> None:
    if not folder.exists():
        try:
            os.rename(tmp, folder)
        except OSError as exc:  # another writer took the name first
            if folder.exists():
                raise FileExistsError(f"{folder} exists") from exc
            raise
        return
    if not replace:
        raise FileExistsError(f"{folder} exists")
    # A folder cannot be renamed over a non-empty one: move the old aside, the new in, then drop the old.
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _check_shape(path: Path, manifest: dict[str, Any]) -> None:
    for key, kind in (("kind", str), ("version", str), ("created", str), ("files", dict), ("metadata", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ModelFormatError(f"{path}: the manifest lacks '{key}' (a {kind.__name__})")
    for name, entry in manifest["files"].items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ModelFormatError(f"{path}: file '{name}' lies outside the model folder")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise ModelFormatError(f"{path}: file '{name}' lacks its sha256")
        if not isinstance(entry.get("size"), int):
            raise ModelFormatError(f"{path}: file '{name}' lacks its size")


def _describe(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise ModelFormatError(f"{path}: listed as written, but no such file")
    return {"sha256": _sha256(path), "size": path.stat().st_size}


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _package_version() -> str:
    try:
        return distribution_version("smartblock")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
