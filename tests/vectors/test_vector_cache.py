"""Tests of finetune.vectors.cache: the kept vectors cached by (vector file, wanted words)."""

import gzip
import logging
import os
import time

import numpy as np
import pytest

import finetune.vectors.reading
from finetune.vectors import cache as vector_cache
from finetune.vectors.reading import VectorFileError, read_word_vectors

WORDS = [f"词{i}" for i in range(40)]
DIM = 6
WANTED = {"词3", "词0", "词17", "词39", "不在文件里", "词3 "}
HOUR_AGO_NS = time.time_ns() - 3600 * 10**9


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """The cache in this test's own folder, on whatever the environment says."""
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FINETUNE_VECTOR_CACHE", raising=False)
    return tmp_path / "cache" / "filtered-vectors"


def aged(path, ns=HOUR_AGO_NS):
    """Sets the file's mtime in the past: a file written just now is not cached (it may change again unseen)."""
    os.utime(path, ns=(ns, ns))
    return path


def write_vectors(path, seed=0, words=WORDS):
    """word2vec binary or text by the name, maybe gzip-compressed; text repeats 词3, its header is off by one."""
    vectors = np.random.default_rng(seed).normal(size=(len(words), DIM)).astype(np.float32)
    if ".bin" in path.name:
        data = f"{len(words)} {DIM}\n".encode() + b"".join(
            f"{word} ".encode() + vector.astype("<f4").tobytes() for word, vector in zip(words, vectors)
        )
    else:
        lines = [f"{len(words)} {DIM}"] + [f"{w} {' '.join(map(repr, v.tolist()))}" for w, v in zip(words, vectors)]
        data = "\n".join([*lines, lines[4]]).encode() + b"\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return aged(path)


class FileReads:
    """Counts the reads of vector files; with `forbid`, a read fails the test."""

    def __init__(self, monkeypatch, forbid=False):
        self.count, self.forbid = 0, forbid
        read_file = finetune.vectors.reading.read_vector_file

        def counted(path, wanted, **options):
            if self.forbid:
                raise AssertionError(f"{path} was read although its vectors are cached")
            self.count += 1
            return read_file(path, wanted, **options)

        monkeypatch.setattr(finetune.vectors.reading, "read_vector_file", counted)


def entries(cache_dir):
    return sorted(cache_dir.glob("*/*.safetensors"))


def assert_same(read, expected):
    assert read.words == expected.words
    assert read.dim == expected.dim and read.vectors.dtype == np.float32 and read.vectors.flags.writeable
    np.testing.assert_array_equal(read.vectors, expected.vectors)


@pytest.mark.parametrize("name", ["vectors.txt", "vectors.bin", "vectors.txt.gz"])
def test_second_read_comes_from_the_cache_exactly_without_opening_the_file(
    tmp_path, cache_dir, monkeypatch, caplog, name
):
    path = write_vectors(tmp_path / name)
    fresh = read_word_vectors(path, wanted=WANTED, cache=False)
    assert entries(cache_dir) == []

    first = read_word_vectors(path, wanted=WANTED)
    FileReads(monkeypatch, forbid=True)
    with caplog.at_level(logging.INFO, logger="finetune.vectors.reading"):
        second = read_word_vectors(path, wanted=list(WANTED))  # any iterable, any order: the same words

    assert fresh.words == ["词0", "词3", "词17", "词39"]
    assert_same(first, fresh)
    assert_same(second, fresh)
    assert len(entries(cache_dir)) == 1
    assert f"read {path} from the cache in " in caplog.text
    assert "entries, kept 4 words; cache entry " in caplog.text
    if ".bin" not in name:  # the warnings of the first read are logged again
        assert f"{path}: header announces 40 vectors, file holds 41" in caplog.text
        assert f"{path}: 1 duplicated words; kept the first vector of each" in caplog.text


def test_cached_entry_keeps_no_words_when_none_is_found(tmp_path, cache_dir, monkeypatch):
    path = write_vectors(tmp_path / "vectors.txt")
    first = read_word_vectors(path, wanted={"不在文件里"})
    FileReads(monkeypatch, forbid=True)

    again = read_word_vectors(path, wanted={"不在文件里"})

    assert again.words == [] and again.vectors.shape == (0, DIM)
    assert_same(again, first)


def test_touched_or_changed_file_is_read_again(tmp_path, cache_dir, monkeypatch):
    path = write_vectors(tmp_path / "vectors.bin")
    read_word_vectors(path, wanted=WANTED)
    reads = FileReads(monkeypatch)

    touched_ns = HOUR_AGO_NS + 10**9
    before = aged(path, touched_ns).stat()  # same content, another mtime
    touched = read_word_vectors(path, wanted=WANTED)
    aged(write_vectors(path, seed=1), touched_ns)  # new vectors, as `cp -p` would put them: the ctime tells
    after = path.stat()
    changed = read_word_vectors(path, wanted=WANTED)
    again = read_word_vectors(path, wanted=WANTED)

    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert reads.count == 2
    np.testing.assert_array_equal(changed.vectors, read_word_vectors(path, wanted=WANTED, cache=False).vectors)
    assert not np.array_equal(changed.vectors, touched.vectors)
    assert_same(again, changed)
    assert len(entries(cache_dir)) == 1  # the entries of earlier versions of the file are removed


def test_file_modified_just_now_is_not_cached(tmp_path, cache_dir, monkeypatch):
    path = write_vectors(tmp_path / "vectors.txt")
    aged(path, time.time_ns())
    reads = FileReads(monkeypatch)

    read_word_vectors(path, wanted=WANTED)
    read_word_vectors(path, wanted=WANTED)

    assert reads.count == 2 and entries(cache_dir) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # cut short
        lambda data: data[:-9] + bytes(9),  # the last values zeroed
        lambda data: data.replace("词17".encode(), "词18".encode()),  # a word changed in the header
        lambda data: b"not safetensors",
        lambda data: b"",
    ],
    ids=["truncated", "zeroed", "word", "garbage", "empty"],
)
def test_damaged_entry_is_ignored_and_rebuilt(tmp_path, cache_dir, monkeypatch, caplog, damage):
    path = write_vectors(tmp_path / "vectors.txt")
    fresh = read_word_vectors(path, wanted=WANTED)
    [entry] = entries(cache_dir)
    entry.write_bytes(damage(entry.read_bytes()))
    reads = FileReads(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="finetune"):
        rebuilt = read_word_vectors(path, wanted=WANTED)
    reads.forbid = True
    again = read_word_vectors(path, wanted=WANTED)

    assert reads.count == 1
    assert f"ignoring the damaged vector cache entry {entry} (" in caplog.text
    assert_same(rebuilt, fresh)
    assert_same(again, fresh)


def test_different_wanted_words_have_different_entries(tmp_path, cache_dir, monkeypatch):
    path = write_vectors(tmp_path / "vectors.txt")
    small = read_word_vectors(path, wanted={"词1", "词2"})
    large = read_word_vectors(path, wanted={"词1", "词2", "词5"})
    FileReads(monkeypatch, forbid=True)

    assert len(entries(cache_dir)) == 2
    assert_same(read_word_vectors(path, wanted={"词2", "词1"}), small)
    assert_same(read_word_vectors(path, wanted={"词1", "词2", "词5"}), large)
    assert large.words == ["词1", "词2", "词5"]


def test_each_file_keeps_its_most_recently_used_entries(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(vector_cache, "MAX_ENTRIES_PER_FILE", 2)
    path = write_vectors(tmp_path / "vectors.txt")
    other_file = write_vectors(tmp_path / "other.txt")
    for words in ({"词1"}, {"词2"}):
        read_word_vectors(path, wanted=words)
    read_word_vectors(other_file, wanted={"词1"})
    entry_of = {word: vector_cache.cache_entry(path, {word}).file for word in ("词1", "词2", "词3")}
    aged(entry_of["词1"], time.time_ns() - 20 * 10**9)  # used before 词2
    aged(entry_of["词2"], time.time_ns() - 10 * 10**9)

    read_word_vectors(path, wanted={"词1"})  # now used after 词2
    read_word_vectors(path, wanted={"词3"})

    assert [word for word, entry in entry_of.items() if entry.exists()] == ["词1", "词3"]
    assert vector_cache.cache_entry(other_file, {"词1"}).file.exists()  # other files keep theirs
    assert len(entries(cache_dir)) == 3


def test_cache_turned_off_by_argument_or_environment(tmp_path, cache_dir, monkeypatch):
    path = write_vectors(tmp_path / "vectors.txt")
    reads = FileReads(monkeypatch)

    read_word_vectors(path, wanted=WANTED, cache=False)
    read_word_vectors(path, wanted=WANTED, cache=False)
    monkeypatch.setenv("FINETUNE_VECTOR_CACHE", "0")
    read_word_vectors(path, wanted=WANTED)
    read_word_vectors(path, wanted=WANTED)
    read_word_vectors(path)  # every word: never cached
    monkeypatch.delenv("FINETUNE_VECTOR_CACHE")
    read_word_vectors(path)

    assert reads.count == 6 and not cache_dir.exists()


def test_cache_that_cannot_be_written_does_not_fail_the_read(tmp_path, monkeypatch, caplog):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "not-a-folder"))
    path = write_vectors(tmp_path / "vectors.txt")

    with caplog.at_level(logging.WARNING, logger="finetune"):
        read = read_word_vectors(path, wanted=WANTED)

    assert_same(read, read_word_vectors(path, wanted=WANTED, cache=False))
    assert "could not cache the kept vectors in " in caplog.text


def test_errors_are_not_cached(tmp_path, cache_dir):
    path = tmp_path / "short.txt"
    path.write_text("2 3\n词0 1 2 3\n词1 1 2\n", encoding="utf-8")
    aged(path)

    for _ in range(2):
        with pytest.raises(VectorFileError, match=r"short\.txt: line 3 has 2 values, expected 3"):
            read_word_vectors(path, wanted={"词0"})
    assert entries(cache_dir) == []
