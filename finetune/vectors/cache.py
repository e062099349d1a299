"""The vectors `read_word_vectors` keeps, cached by (vector file, wanted words).

Streaming a multi-gigabyte vector file for the 20k words of a training set takes minutes; a second
run over the same file with the same words loads them from here in a fraction of a second. An
entry is one safetensors file, under `$FINETUNE_CACHE/filtered-vectors` (else
`~/.cache/finetune/filtered-vectors`)::

    <file name>-<hash of its resolved path>/<hash of its identity>-<hash of the wanted words>.safetensors

A file's identity is what `stat` says of it, as git's index records it (size, mtime and ctime in
ns, inode), never a hash of gigabytes: an edited, touched or replaced file misses, and the entries
of its earlier identities are then removed. Each vector file keeps its `MAX_ENTRIES_PER_FILE` most
recently used vocabularies. Delete the folder to clear the cache; `FINETUNE_VECTOR_CACHE=0` (or
`read_word_vectors(..., cache=False)`) turns it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from pathlib import Path

import numpy as np

from finetune.files import atomic_path, cache_directory

logger = logging.getLogger(__name__)

# Part of every entry's name: a change to what a read keeps (a reader fix) must bump it.
FORMAT = "finetune-filtered-vectors/1"
# 20k 300-dimensional vectors take 24 MB: a few vocabularies per file cost little next to the file.
MAX_ENTRIES_PER_FILE = 8
# A file modified this recently could be modified again within the same timestamp tick (coarse on
# Linux, 2 s on FAT) without its mtime changing: it is read but not cached (git's "racy" entries).
RACY_NANOSECONDS = 2_000_000_000
# What an entry records of the original read, to log it again: see `read_word_vectors`.
INFO_KEYS = frozenset({"dim", "entries", "warnings", "seconds", "format"})
EARLIER_INFO_KEYS = INFO_KEYS - {"format"}  # an entry written before the format was recorded: still good


def cache_enabled(cache: bool | None = None) -> bool:
    """`cache` if given, else on unless the environment sets FINETUNE_VECTOR_CACHE to 0/false/no/off."""
    if cache is not None:
        return cache
    return os.environ.get("FINETUNE_VECTOR_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _checksum(words_json: str, vectors: np.ndarray) -> str:
    return str(zlib.crc32(np.ascontiguousarray(vectors), zlib.crc32(words_json.encode("utf-8"))))  # no copy


class CacheEntry:
    """The cache file for one vector file (as it is now) and one set of wanted words."""

    def __init__(self, file: Path, identity: str, wanted_key: str):
        self.file = file
        self.identity = identity
        self.wanted_key = wanted_key

    def load(self) -> tuple[list[str], np.ndarray, dict] | None:
        """(words, vectors, info) as stored, or None when there is no entry or it is damaged."""
        if not self.file.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(self.file, framework="np") as entry:
                metadata = entry.metadata() or {}
                vectors = entry.get_tensor("vectors")
            if (metadata.get("identity"), metadata.get("wanted")) != (self.identity, self.wanted_key):
                raise ValueError("it was made for another file or other words")
            words, info = json.loads(metadata["words"]), json.loads(metadata["info"])
            if set(info) not in (INFO_KEYS, EARLIER_INFO_KEYS):
                raise ValueError(f"its info holds {sorted(info)}, not {sorted(INFO_KEYS)}")
            if vectors.dtype != np.float32 or vectors.shape != (len(words), info["dim"]):
                raise ValueError(f"{len(words)} words but vectors of shape {vectors.shape}")
            if metadata.get("checksum") != _checksum(metadata["words"], vectors):
                raise ValueError("its checksum does not match")
        # Whatever is wrong with the entry (cut short, overwritten, removed meanwhile), the file is
        # still there to read: a cache must never fail a run.
        except Exception as err:  # noqa: BLE001
            logger.warning("ignoring the damaged vector cache entry %s (%s); reading the vector file", self.file, err)
            return None
        try:
            os.utime(self.file)  # recently used: kept longest
        except OSError:
            pass
        return words, vectors, info

    def store(self, words: list[str], vectors: np.ndarray, info: dict) -> None:
        """Writes the entry atomically, then removes stale and least recently used ones; never raises."""
        from safetensors.numpy import save_file

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        words_json = json.dumps(words, ensure_ascii=False)
        metadata = {
            "identity": self.identity,
            "wanted": self.wanted_key,
            "words": words_json,
            "info": json.dumps(info, ensure_ascii=False),
            "checksum": _checksum(words_json, vectors),
        }
        try:
            with atomic_path(self.file) as temporary:
                save_file({"vectors": vectors}, str(temporary), metadata=metadata)
            self._prune()
        except Exception as err:  # noqa: BLE001  (a full disk, a read-only cache: the run goes on)
            logger.warning("could not cache the kept vectors in %s: %s", self.file, err)

    def _prune(self) -> None:
        current = self.file.name.split("-", 1)[0] + "-"
        kept = []
        for entry in self.file.parent.glob("*.safetensors"):
            if not entry.name.startswith(current):  # an earlier identity of the file: never hit again
                entry.unlink(missing_ok=True)
                continue
            try:
                kept.append((entry.stat().st_mtime_ns, entry))
            except FileNotFoundError:  # removed by another process meanwhile
                pass
        for _, entry in sorted(kept, reverse=True)[MAX_ENTRIES_PER_FILE:]:
            entry.unlink(missing_ok=True)


def cache_entry(path: Path, wanted: set[str]) -> CacheEntry | None:
    """The entry for `path` as it is now and `wanted`; None if the file cannot be stat'ed or is racy."""
    try:
        stat = os.stat(path)
    except OSError:  # the reader reports a missing file as it always has
        return None
    if stat.st_mtime_ns > time.time_ns() - RACY_NANOSECONDS:
        logger.debug("%s was modified less than 2 s ago: not cached", path)
        return None
    resolved = path.resolve()
    identity = json.dumps(
        {
            "format": FORMAT,
            "path": str(resolved),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino,
        },
        sort_keys=True,
    )
    wanted_key = _hash(json.dumps(sorted(wanted), ensure_ascii=False))
    folder = cache_directory("filtered-vectors") / f"{resolved.name[:100]}-{_hash(str(resolved))[:12]}"
    return CacheEntry(folder / f"{_hash(identity)[:16]}-{wanted_key[:16]}.safetensors", identity, wanted_key)
