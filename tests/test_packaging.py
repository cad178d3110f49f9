"""Every file the packages read besides their Python is declared package data, so an installed wheel
(not only this editable checkout) carries it: the search page once was not."""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "retrieval", "features", "ranking", "serving", "data")
NOT_DATA = {".py", ".pyc", ".pyi"}


def _declared() -> dict[str, list[str]]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return pyproject["tool"]["setuptools"]["package-data"]


def _matches(inside: str, glob: str) -> bool:
    """As setuptools' glob matches: part for part, so ``*`` never crosses a ``/``."""
    path, pattern = PurePosixPath(inside).parts, PurePosixPath(glob).parts
    return len(path) == len(pattern) and all(fnmatch(p, g) for p, g in zip(path, pattern, strict=True))


def test_every_non_python_file_in_the_packages_is_package_data() -> None:
    declared = _declared()
    missing = []
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*"):
            if path.is_dir() or path.suffix in NOT_DATA or "__pycache__" in path.parts:
                continue
            # The nearest package folder above the file, and the file's path inside it.
            folder = path.parent
            while not (folder / "__init__.py").is_file():
                folder = folder.parent
            package = ".".join(folder.relative_to(ROOT).parts)
            inside = path.relative_to(folder).as_posix()
            if not any(_matches(inside, glob) for glob in declared.get(package, [])):
                missing.append(f"{path.relative_to(ROOT)} (package {package})")
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
