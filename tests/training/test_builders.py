"""finetune.training.builders: the vocabulary, and the word-vector model built from the training split."""

import logging
import os
import time
from collections import Counter

import numpy as np
import pytest
import torch

from finetune import BiLSTMAttentionForSequenceClassification, JiebaTokenizer
from finetune.config.arguments import RunArguments
from finetune.training.builders import DEFAULT_VECTOR_SIZE, SPECIAL_TOKENS, build_vocabulary, build_word_vector_model

# 电 occurs alone once and inside 电影 four times: as a character it counts 5.
COUNTS = Counter({"很": 9, "好": 6, "电影": 4, "电": 1, "差": 3, "失望": 1})


def test_vocabulary_special_tokens_then_frequency_order():
    vocab = build_vocabulary(COUNTS, min_freq=1, max_size=100)
    assert vocab[:2] == ["[PAD]", "[UNK]"] == SPECIAL_TOKENS
    # by falling frequency; ties by the string (code point order), so the order never depends on dict order
    assert vocab[2:] == ["很", "好", "电", "影", "电影", "差", "失", "失望", "望"]
    assert len(set(vocab)) == len(vocab)


def test_vocabulary_adds_the_characters_of_words():
    vocab = build_vocabulary(Counter({"失望": 2, "望": 1}), min_freq=1, max_size=100)
    assert vocab == SPECIAL_TOKENS + ["望", "失", "失望"]  # 望: 1 alone + 2 inside 失望
    # a vocabulary the tokenizer accepts, that reads an unseen word through its characters
    tokenizer = JiebaTokenizer(vocab=build_vocabulary(COUNTS, min_freq=1, max_size=100))
    assert tokenizer.convert_ids_to_tokens(tokenizer("电很")["input_ids"]) == ["电", "很"]


def test_vocabulary_min_freq():
    assert build_vocabulary(COUNTS, min_freq=4, max_size=100) == SPECIAL_TOKENS + ["很", "好", "电", "影", "电影"]
    assert build_vocabulary(COUNTS, min_freq=5, max_size=100) == SPECIAL_TOKENS + ["很", "好", "电"]
    assert build_vocabulary(COUNTS, min_freq=10, max_size=100) == SPECIAL_TOKENS


def test_vocabulary_keeps_rare_words_that_have_vectors():
    vocab = build_vocabulary(COUNTS, min_freq=4, max_size=100, keep={"失望", "没见过"})
    # 失望 has a vector: kept though seen once; its characters have none; 没见过 never occurs: not added
    assert vocab == SPECIAL_TOKENS + ["很", "好", "电", "影", "电影", "失望"]


def test_vocabulary_max_size_cuts_the_rarest():
    vocab = build_vocabulary(COUNTS, min_freq=1, max_size=3)
    assert vocab == SPECIAL_TOKENS + ["很", "好", "电"]  # special tokens not counted in max_size
    assert build_vocabulary(COUNTS, min_freq=1, max_size=0) == SPECIAL_TOKENS


def test_vocabulary_does_not_repeat_special_tokens():
    vocab = build_vocabulary(Counter({"[UNK]": 50, "[PAD]": 40, "好": 2}), min_freq=1, max_size=10)
    assert vocab[:2] == SPECIAL_TOKENS
    assert vocab.count("[UNK]") == 1 and vocab.count("[PAD]") == 1 and "好" in vocab


def read_vec_file(path):
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return {word: np.array(values, dtype=np.float32) for word, *values in (line.split() for line in lines)}


@pytest.fixture(scope="module")
def built(review_splits, tiny_vectors):
    args = RunArguments.of(
        word_vectors=str(tiny_vectors), min_freq=1, lstm_hidden_size=8, attention_dim=8, max_seq_length=32, seed=0
    )
    return build_word_vector_model(review_splits, {0: "negative", 1: "positive"}, args)


def test_built_model_and_config(built):
    model, config = built.model, built.model.config
    assert isinstance(model, BiLSTMAttentionForSequenceClassification)
    assert isinstance(built.tokenizer, JiebaTokenizer)
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.label2id == {"negative": 0, "positive": 1}
    assert config.num_labels == 2
    assert config.embedding_dim == 8  # from the vector file
    assert config.lstm_hidden_size == 8 and config.attention_dim == 8 and config.max_length == 32
    assert config.vocab_size == len(built.tokenizer) == model.get_input_embeddings().weight.shape[0]
    assert config.pad_token_id == built.tokenizer.pad_token_id == 0
    assert config.unk_token_id == built.tokenizer.unk_token_id == 1
    assert built.tokenizer.model_max_length == 32


def test_vocabulary_is_every_training_word_and_its_characters(built, review_splits):
    tokenizer = built.tokenizer
    train_words = {w for text in review_splits["train"]["text"] for w in tokenizer.segment(text)}
    characters = {char for word in train_words for char in word}
    assert set(tokenizer.get_vocab()) == train_words | characters | set(SPECIAL_TOKENS)  # min_freq=1
    assert not any(tokenizer.unk_token_id in ids for ids in built.splits["train"]["input_ids"])


def test_embedding_rows_are_the_pretrained_vectors(built, tiny_vectors):
    vectors = read_vec_file(tiny_vectors)
    vocab = built.tokenizer.get_vocab()
    weight = built.model.get_input_embeddings().weight.detach().numpy()
    found = [word for word in vectors if word in vocab]
    assert "电影" in found and "酒店" in found and "很" in found
    for word in found:
        np.testing.assert_allclose(weight[vocab[word]], vectors[word], rtol=0, atol=1e-6)
    assert np.all(weight[vocab["[PAD]"]] == 0)
    assert np.any(weight[vocab["[UNK]"]] != 0)
    report = built.report["vectors"]
    assert report["types_found"] == len(found)
    assert report["vectors"] == str(tiny_vectors)


def test_encoded_splits(built, review_splits):
    assert set(built.splits) == {"train", "validation", "test"}
    tokenizer = built.tokenizer
    for name, split in review_splits.items():
        encoded = built.splits[name]
        assert {"input_ids", "attention_mask", "length", "label"} <= set(encoded.column_names)
        assert "words" not in encoded.column_names
        assert encoded["label"] == split["label"]
        assert encoded["input_ids"] == [tokenizer(text)["input_ids"] for text in split["text"]]
        assert encoded["length"] == [len(ids) for ids in encoded["input_ids"]]


def test_built_model_runs_on_encoded_batch(built):
    rows = built.splits["train"].select(range(4))
    batch = built.tokenizer.pad({"input_ids": rows["input_ids"]}, return_tensors="pt")
    outputs = built.model(**batch, labels=torch.tensor(rows["label"]))
    assert outputs.logits.shape == (4, 2)
    assert torch.isfinite(outputs.loss)


def test_coverage_counts_every_training_token(built, review_splits):
    report = built.report["vectors"]
    texts = review_splits["train"]["text"]
    assert report["tokens_total"] == sum(len(built.tokenizer.tokenize(text)) for text in texts)
    assert report["tokens_total"] == sum(built.splits["train"]["length"])  # no text longer than max_length
    assert 0 < report["token_coverage"] < 1


@pytest.mark.parametrize("characters", [False, True])
def test_word2vec_trained_here_can_learn_character_vectors(characters):
    from finetune.training.builders import default_vectors_path
    from finetune.vectors.reading import read_word_vectors

    words = [["这部", "电影", "很", "精彩"], ["酒店", "服务", "很", "糟糕"]] * 20
    args = RunArguments.of(
        pretrain_corpus=False, vector_characters=characters, vector_size=8, vector_epochs=1, vector_min_count=1
    ).vectors
    vectors = read_word_vectors(default_vectors_path(words, JiebaTokenizer(vocab=SPECIAL_TOKENS), args, seed=0))
    assert {"电影", "糟糕", "很"} <= set(vectors.words)
    # 糟 only occurs inside 糟糕: it has a vector only when word2vec also read the text as characters
    assert ("糟" in vectors.words) is characters


def build(splits, vectors, **model_settings):
    args = RunArguments.of(
        word_vectors=str(vectors), min_freq=1, lstm_hidden_size=8, attention_dim=8, max_seq_length=32, seed=0,
        **model_settings,
    )  # fmt: skip
    built = build_word_vector_model(splits, {0: "negative", 1: "positive"}, args)
    return built, args.vectors


def test_vectors_that_fit_give_no_warnings_and_record_their_dimension(review_splits, tiny_vectors, caplog):
    with caplog.at_level(logging.WARNING, logger="finetune"):
        built, model_args = build(review_splits, tiny_vectors)

    assert built.report["warnings"] == []
    assert not [record for record in caplog.records if record.name.startswith("finetune")]
    assert model_args.vector_size == 8  # what config.yaml records: the dimension used, not the default None


def test_vector_size_that_the_file_overrides_warns(review_splits, tiny_vectors, caplog):
    with caplog.at_level(logging.WARNING, logger="finetune"):
        built, model_args = build(review_splits, tiny_vectors, vector_size=300)

    message = (
        f"--vector_size 300 was not used: {tiny_vectors} holds 8-dimensional vectors, so the embeddings have 8 "
        "dimensions (--vector_size only sizes word2vec trained here)"
    )
    assert built.report["warnings"] == [message]
    assert [(r.levelname, r.message) for r in caplog.records if r.name.startswith("finetune")] == [("WARNING", message)]
    assert model_args.vector_size == built.model.config.embedding_dim == 8


def test_vectors_that_cover_nothing_warn_in_the_report(review_splits, tmp_path, caplog):
    english = tmp_path / "glove.6B.8d.txt"
    english.write_text("".join(f"{word} {' '.join(['0.1'] * 8)}\n" for word in ("the", "movie", "good")), "utf-8")

    with caplog.at_level(logging.WARNING, logger="finetune"):
        built, _ = build(review_splits, english)

    assert len(built.report["warnings"]) == 1
    assert built.report["warnings"][0].startswith(f"{english}: the vectors cover only 0.0% of the ")
    assert "0.0% of the training tokens" in built.report["warnings"][0]
    assert built.report["warnings"][0] in caplog.text


def test_word2vec_trained_here_defaults_to_200_dimensions():
    from finetune.training.builders import default_vectors_path
    from finetune.vectors.reading import read_word_vectors

    args = RunArguments.of(pretrain_corpus=False, vector_epochs=1, vector_min_count=1).vectors
    assert args.vector_size is None
    path = default_vectors_path([["电影", "很", "精彩"]] * 5, JiebaTokenizer(vocab=SPECIAL_TOKENS), args, seed=0)
    assert read_word_vectors(path).dim == DEFAULT_VECTOR_SIZE == 200


def test_second_build_reads_the_vectors_from_the_cache(review_splits, tiny_vectors, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    vectors = tmp_path / "tiny.vec"
    vectors.write_bytes(tiny_vectors.read_bytes())
    os.utime(vectors, (time.time() - 3600,) * 2)  # a file written just now is not cached
    first, _ = build(review_splits, vectors)

    with caplog.at_level(logging.INFO, logger="finetune"):
        second, _ = build(review_splits, vectors)

    assert f"read {vectors} from the cache in " in caplog.text
    assert first.tokenizer.get_vocab() == second.tokenizer.get_vocab()
    torch.testing.assert_close(first.model.get_input_embeddings().weight, second.model.get_input_embeddings().weight)
    assert first.report == second.report
