"""The one artifact format: atomic version folders, checksums checked on load, numbering, current pointer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data.artifacts import MANIFEST, Artifact, ArtifactStore, read_manifest, verify, write_version
from data.errors import ModelFormatError


def text_artifact(body: str = "weights\n", kind: str = "toy", **metadata: object) -> Artifact:
    def write(folder: Path) -> list[str]:
        (folder / "model.txt").write_text(body, encoding="utf-8")
        return ["model.txt"]

    return Artifact(kind, write, metadata)


def test_a_version_round_trips_with_checksums(tmp_path: Path) -> None:
    written = write_version(tmp_path / "v1", text_artifact(trees=np.int64(3)))
    manifest = verify(tmp_path / "v1", "toy")
    assert manifest == written and manifest["version"] == "v1" and manifest["metadata"] == {"trees": 3}
    assert manifest["files"]["model.txt"]["size"] == len("weights\n")
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no temporary left behind
    with pytest.raises(ModelFormatError, match="holds a 'toy' model, not 'lgbm'"):
        verify(tmp_path / "v1", "lgbm")


def test_changed_or_cut_files_are_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "v1"
    write_version(folder, text_artifact())
    (folder / "model.txt").write_text("weighTs\n", encoding="utf-8")  # same length
    read_manifest(folder)  # reading the manifest alone does not open the files
    with pytest.raises(ModelFormatError, match=r"model\.txt: sha256 .* differs from the manifest"):
        verify(folder)
    (folder / "model.txt").write_text("weights", encoding="utf-8")
    with pytest.raises(ModelFormatError, match=r"model\.txt: 7 bytes where the manifest says 8"):
        verify(folder)


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def broken(folder: Path) -> list[str]:
        (folder / "half.bin").write_bytes(b"\0")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_version(tmp_path / "v1", Artifact("toy", broken, {}))
    assert list(tmp_path.iterdir()) == []


def test_replace_keeps_other_folders_safe(tmp_path: Path) -> None:
    write_version(tmp_path / "v1", text_artifact("old\n"))
    with pytest.raises(FileExistsError):
        write_version(tmp_path / "v1", text_artifact("new\n"))
    write_version(tmp_path / "v1", text_artifact("new\n"), replace=True)
    assert (tmp_path / "v1" / "model.txt").read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ModelFormatError, match="holds files but no saved model"):
        write_version(tmp_path / "notes", text_artifact(), replace=True)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"format": 1, "model": "lgbm"}, r"older smartblock \(manifest format 1"),
        ({"format": 9}, "manifest format 9, this code reads 2"),
        ({"format": 2, "kind": "toy"}, "lacks 'version'"),
        (
            {"format": 2, "kind": "t", "version": "v", "created": "", "metadata": {}, "files": {"../x": {}}},
            "outside the model folder",
        ),
        ("[]", "a JSON object was expected"),
        ("{", "not valid JSON"),
    ],
)
def test_bad_manifests_are_refused_clearly(tmp_path: Path, manifest: object, message: str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (tmp_path / MANIFEST).write_text(text, encoding="utf-8")
    with pytest.raises(ModelFormatError, match=message):
        read_manifest(tmp_path)
    with pytest.raises(ModelFormatError, match=r"is not a saved model: manifest\.json is missing"):
        read_manifest(tmp_path / "nothing")


def test_store_numbers_versions_and_moves_the_pointer(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "line")
    assert store.versions() == [] and store.current() is None and store.rollback() is None
    first, second = store.write(text_artifact("a\n")), store.write(text_artifact("b\n"))
    assert (first, second) == ("v0001", "v0002") and store.versions() == ["v0001", "v0002"]
    (tmp_path / "line" / "versions" / ".v0003.tmp-dead").mkdir()  # a crashed writer's leftover
    assert store.versions() == ["v0001", "v0002"] and not store.exists("../line")
    store.make_current(first)
    store.make_current(second)
    store.make_current(second)  # already current: the history does not grow
    assert store.history() == [first, second]
    assert store.rollback() == first and store.current() == first and store.rollback() is None
    named = store.write(text_artifact("c\n"), version="m3-abc")
    assert store.write(text_artifact("c\n"), version="m3-abc") == named  # same name: replaced
    assert verify(store.folder(named))["version"] == "m3-abc"
    with pytest.raises(ModelFormatError, match="no saved version 'v0009'"):
        store.make_current("v0009")
    (tmp_path / "line" / "state.json").write_text('{"current": 3}')
    with pytest.raises(ModelFormatError, match=r"state\.json: expected"):
        store.current()
