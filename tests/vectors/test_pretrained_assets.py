"""scripts/build_pretrained_assets.py: the Chinese Wikipedia vectors of synonyms==3.8.0, checked and cached.

The build's steps (download, pinned checksums, extraction, reuse) run on a small archive made here; the
real download and the real vectors are the slow test (`pytest -m slow`; needs PyPI)."""

import gzip
import hashlib
import io
import tarfile

import numpy as np
import pytest

import scripts.build_pretrained_assets as assets
from finetune.vectors.reading import read_word_vectors


def fake_release(content: bytes):
    """A downloader writing an archive like synonyms' sdist, byte for byte the same each time, holding `content`
    as words.vector; `download.calls` counts its calls."""

    def download(requirement, directory):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(assets.WORDS["member"])
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        (directory / assets.WORDS["archive"]).write_bytes(gzip.compress(buffer.getvalue(), mtime=0))
        download.calls += 1

    download.calls = 0
    return download


def pin(monkeypatch, tmp_path, download, content: bytes) -> None:
    """Pins the checksums of what `download` writes, as the script pins the real release's."""
    download("synonyms==3.8.0", tmp_path)
    archive = hashlib.sha256((tmp_path / assets.WORDS["archive"]).read_bytes()).hexdigest()
    pinned = {"sha256": hashlib.sha256(content).hexdigest(), "archive_sha256": archive}
    monkeypatch.setattr(assets, "WORDS", {**assets.WORDS, **pinned})
    download.calls = 0


def test_the_vectors_are_extracted_checked_and_then_reused(tmp_path, monkeypatch):
    content = b"2 3\n" + b"".join(word.encode() + b" " + np.arange(3, dtype="<f4").tobytes() for word in ("好", "差"))
    download = fake_release(content)
    pin(monkeypatch, tmp_path, download, content)

    path = assets.build_words(tmp_path / "cache", download=download)
    assert path == tmp_path / "cache" / "synonyms-3.8.0" / "words.vector" and path.read_bytes() == content
    assert read_word_vectors(path, cache=False).words == ["好", "差"]  # binary, read by its content
    assert assets.build_words(tmp_path / "cache", download=download) == path
    assert download.calls == 1  # the second build found the file, checked it, and downloaded nothing

    path.write_bytes(content + b"x")
    with pytest.raises(assets.AssetError, match=r"words\.vector: not the file pinned here \(sha256 differs\)"):
        assets.build_words(tmp_path / "cache", download=download)


def test_an_archive_or_a_file_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    with pytest.raises(assets.AssetError, match=r"synonyms-3\.8\.0\.tar\.gz: not the archive pinned here"):
        assets.build_words(tmp_path / "cache", download=fake_release(b"2 3\n"))
    download = fake_release(b"2 3\n")
    pin(monkeypatch, tmp_path, download, b"another file")
    with pytest.raises(assets.AssetError, match=r"synonyms/data/words\.vector: not the file pinned here"):
        assets.build_words(tmp_path / "cache", download=download)
    assert not (tmp_path / "cache" / "synonyms-3.8.0" / "words.vector").exists()  # nothing left half-checked


@pytest.mark.slow
def test_the_real_vectors_are_built_from_pypi_and_read(tmp_path):
    path = assets.main(["--cache", str(tmp_path), "--only", "words"])["words"]
    vectors = read_word_vectors(path, wanted=["北京", "上海", "香蕉"], cache=False)
    beijing, shanghai, banana = (vectors.vectors[vectors.words.index(word)] for word in ("北京", "上海", "香蕉"))

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert vectors.vectors.shape == (3, 100)
    assert cosine(beijing, shanghai) > 0.7 and cosine(beijing, banana) < 0
