"""Index fingerprints: what data and which encoder settings an index on disk was built from.

Every index folder holds ``fingerprint.json``, written last (so a half-built folder has none). Loading
compares it with the fingerprint of the data in use: an index built from other data is refused or rebuilt,
never silently searched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from retrieval.base import Passage
from retrieval.errors import IndexNotFoundError, StaleIndexError

FORMAT_VERSION = 1
FILE_NAME = "fingerprint.json"


def fingerprint(kind: str, encoder: str, passages: Iterable[Passage]) -> dict:
    """Kind of index, encoder identity, and a digest of every (id, text) in order."""
    digest = hashlib.sha256()
    count = 0
    for p in passages:
        digest.update(p.id.encode())
        digest.update(b"\0")
        digest.update(p.text.encode())
        digest.update(b"\n")
        count += 1
    return {
        "format": FORMAT_VERSION,
        "kind": kind,
        "encoder": encoder,
        "passages": count,
        "corpus_sha256": digest.hexdigest(),
    }


def read(folder: Path) -> dict | None:
    path = folder / FILE_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None  # a damaged fingerprint is as good as none: the folder is rebuilt or refused


def write(folder: Path, fp: dict) -> None:
    tmp = folder / (FILE_NAME + ".tmp")
    tmp.write_text(json.dumps(fp, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(folder / FILE_NAME)


def differences(found: dict, expected: dict) -> list[str]:
    return [k for k in sorted(set(found) | set(expected)) if found.get(k) != expected.get(k)]


def check(folder: Path, expected: dict | None, *, what: str) -> dict:
    """The folder's fingerprint; raises if there is none, or if it differs from ``expected`` (when given)."""
    found = read(folder)
    if found is None:
        raise IndexNotFoundError(
            f"no complete {what} index in {folder} (build it with `smartblock index build`)"
        )
    if expected is not None and found != expected:
        raise StaleIndexError(
            f"the {what} index in {folder} was built from other data or settings "
            f"(differs in: {', '.join(differences(found, expected))}); rebuild it with "
            "`smartblock index build --world DIR` (it replaces stale indexes)"
        )
    return found


def prepare(folder: Path, expected: dict, *, overwrite: bool, what: str) -> bool:
    """Get ``folder`` ready for a build. False: an index with this fingerprint is already there.

    A folder holding another fingerprint (or a half-built index) is replaced when ``overwrite`` is set and
    refused otherwise; a non-empty folder that is not an index is never deleted.
    """
    found = read(folder)
    if found == expected:
        return False
    if folder.exists() and any(folder.iterdir()):
        ours = found is not None or (folder / ".building").exists()
        if not ours:
            raise StaleIndexError(f"{folder} is not empty and holds no {what} index: refusing to replace it")
        if not overwrite:
            raise StaleIndexError(
                f"the {what} index in {folder} was built from other data or settings; pass overwrite=True "
                "(or run `smartblock index build`, which replaces stale indexes)"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".building").touch()
    return True


def finish(folder: Path, fp: dict) -> None:
    write(folder, fp)
    (folder / ".building").unlink(missing_ok=True)
