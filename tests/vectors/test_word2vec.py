"""Tests of finetune.vectors.word2vec: word2vec trained here, cached by content."""

import logging
import re

import numpy as np
import pytest

from finetune.vectors.reading import read_word_vectors
from finetune.vectors.word2vec import train_word_vectors


@pytest.fixture(scope="module")
def sentences():
    words = ["电影", "好看", "很", "差劲", "演员", "剧情", "不错", "。"]
    rng = np.random.default_rng(4)
    return [list(rng.choice(words, size=rng.integers(3, 8))) for _ in range(200)]


def test_train_word_vectors_writes_readable_binary_and_reuses_it(tmp_path, sentences, monkeypatch):
    settings = dict(vector_size=8, epochs=2, min_count=1, workers=1, cache_dir=tmp_path)

    path = train_word_vectors(sentences, **settings)
    read = read_word_vectors(path)

    assert path.parent == tmp_path and path.name.startswith("word2vec-") and path.suffix == ".bin"
    assert sorted(read.words) == sorted({word for sentence in sentences for word in sentence})
    assert read.dim == 8 and np.all(np.isfinite(read.vectors))

    def no_training(*args, **kwargs):
        raise AssertionError("cached vectors should have been reused")

    monkeypatch.setattr("gensim.models.Word2Vec", no_training)
    assert train_word_vectors(sentences, **settings) == path

    monkeypatch.undo()
    other = train_word_vectors(sentences, **{**settings, "window": 2})
    changed = train_word_vectors(sentences[:-1], **settings)
    assert len({path, other, changed}) == 3
    assert set(tmp_path.iterdir()) == {path, other, changed}  # no temporary files left behind


def test_train_word_vectors_default_cache_dir_and_iterators(tmp_path, sentences, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))

    path = train_word_vectors(sentences[:50], vector_size=4, epochs=1, min_count=1, workers=1)

    assert path.parent == tmp_path / "cache" / "vectors"
    with pytest.raises(TypeError, match="not an iterator"):
        train_word_vectors(iter(sentences), cache_dir=tmp_path)


def test_training_logs_the_vocabulary_and_each_epoch(tmp_path, sentences, caplog):
    with caplog.at_level(logging.INFO, logger="finetune.vectors.word2vec"):
        train_word_vectors(sentences, vector_size=4, epochs=3, min_count=1, workers=1, cache_dir=tmp_path)

    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "word2vec: building the vocabulary of 200 sentences"
    assert re.fullmatch(r"word2vec: 8 words \(min_count 1\) in \d+\.\ds; training 3 epochs", lines[1])
    epochs = [line for line in lines if line.startswith("word2vec: epoch ")]
    assert [line.split(" done")[0] for line in epochs] == [f"word2vec: epoch {k}/3" for k in (1, 2, 3)]
    assert re.fullmatch(r"word2vec: epoch 3/3 done, \d+\.\ds so far \(about 0s left\)", epochs[-1])
