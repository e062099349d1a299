"""Manifests: the name, size and sha256 of every file of a directory, written last and checked before
the directory is trusted again.

A checkpoint (`checkpointing.save_checkpoint`) is written with one: a file cut short (a full disk, a
copy stopped midway), changed or missing is found before anything is loaded from it, and named.
"""

import hashlib
import json
import os
from pathlib import Path

MANIFEST = "manifest.json"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike) -> None:
    """`manifest.json`: the name, size and sha256 of every file in `directory` (subdirectories too)."""
    directory = Path(directory)
    files = {
        name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(directory.rglob("*"))
        if p.is_file() and (name := p.relative_to(directory).as_posix()) != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")


def read_manifest(directory: str | os.PathLike) -> dict[str, tuple[int, str]] | None:
    """name -> (size, sha256) as the manifest of `directory` lists them; None if it has none.

    Raises:
        ValueError: The manifest cannot be read, or names a file outside `directory`; the message names it.
    """
    file = Path(directory) / MANIFEST
    if not file.is_file():
        return None
    try:
        files = json.loads(file.read_text(encoding="utf-8"))["files"]
        entries = {str(name): (int(entry["size"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{file}: cannot be read ({type(error).__name__}: {error})") from None
    outside = [name for name in entries if Path(name).is_absolute() or ".." in Path(name).parts]
    if outside:
        raise ValueError(f"{file}: names a file outside its directory ({outside[0]})")
    return entries


def find_damage(directory: str | os.PathLike, entries: dict[str, tuple[int, str]]) -> str | None:
    """The first file of `directory` not as `entries` (`read_manifest`) list it, as "FILE: what" (missing,
    another size, other content), or None when all are."""
    directory = Path(directory)
    for name, (size, _) in sorted(entries.items()):  # sizes first: cheap, and what a cut-short file shows
        file = directory / name
        if not file.is_file():
            return f"{file}: missing"
        if file.stat().st_size != size:
            return f"{file}: {file.stat().st_size:,} bytes, {size:,} when saved"
    for name, (_, digest) in sorted(entries.items()):
        if file_sha256(directory / name) != digest:
            return f"{directory / name}: same size, other content than when saved"
    return None
