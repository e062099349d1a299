"""The baselines on tiny real data: TF-IDF + LR picks C on dev, fastText learns a separable set and is seeded."""

import logging
import re
import sys

import numpy as np
import pytest
import torch
from conftest import make_reviews

from finetune.evaluation.baselines import FastTextClassifier, TfidfLogisticRegression, macro_f1

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def reviews():
    """Train, dev and test texts with label ids; the label follows from the sentiment word."""

    def split(n, seed):
        rows = make_reviews(n, seed)
        return [text for text, _ in rows], [LABELS.index(label) for _, label in rows]

    torch.set_num_threads(1)
    return split(60, 0), split(15, 1), split(20, 2)


def accuracy(model, texts, labels) -> float:
    return float((model.predict_proba(texts).argmax(-1) == np.asarray(labels)).mean())


def test_macro_f1_counts_every_label():
    assert macro_f1([0, 0, 1, 1], [0, 0, 1, 1], 2) == 1
    assert macro_f1([0, 0, 1, 1], [0, 0, 0, 0], 2) == pytest.approx((2 * 2 / 6 + 0) / 2)
    assert macro_f1([0, 0], [0, 0], 3) == pytest.approx(1 / 3)  # labels never seen count as 0


def test_tfidf_picks_c_on_dev(reviews):
    (train, train_labels), (dev, dev_labels), (test, test_labels) = reviews
    # Train 4:1 positive; C=1e-4 regularises the weights away and leaves the (unpenalised) intercept:
    # every text gets the majority label, dev macro-F1 ~1/3 on the balanced dev texts
    keep = [i for i, label in enumerate(train_labels) if label == 1 or i % 4 == 0]
    skewed, skewed_labels = [train[i] for i in keep], [train_labels[i] for i in keep]
    model = TfidfLogisticRegression(c_grid=(1e-4, 10.0)).fit(skewed, skewed_labels, dev, dev_labels)
    scores = model.selection["dev_macro_f1_by_C"]
    assert scores[1e-4] < 0.5 < scores[10.0] and model.selection["C"] == 10.0
    assert model.selection["dev_macro_f1"] == max(scores.values())
    model = TfidfLogisticRegression().fit(train, train_labels, dev, dev_labels)  # the default grid
    probabilities = model.predict_proba(test)
    assert probabilities.shape == (len(test), 2) and np.allclose(probabilities.sum(-1), 1)
    assert accuracy(model, test, test_labels) >= 0.9


def test_tfidf_logs_the_vectorizing_and_each_c_of_its_grid(reviews, caplog):
    (train, train_labels), (dev, dev_labels), _ = reviews
    with caplog.at_level(logging.INFO, logger="finetune.evaluation.baselines"):
        model = TfidfLogisticRegression(c_grid=(1e-4, 10.0)).fit(train, train_labels, dev, dev_labels)

    lines = caplog.messages
    assert lines[0] == f"TF-IDF: vectorizing {len(train)} training and {len(dev)} dev texts"
    assert re.fullmatch(rf"TF-IDF: {len(model.vectorizer.vocabulary_):,} n-grams in \d+\.\ds", lines[1])
    scores = model.selection["dev_macro_f1_by_C"]
    assert [line.split(" in ")[0] for line in lines[2:]] == [
        f"TF-IDF + LR: C 0.0001 (1/2): dev macro-F1 {scores[1e-4]:.4f}",
        f"TF-IDF + LR: C 10 (2/2): dev macro-F1 {scores[10.0]:.4f}",
    ]


def test_tfidf_without_scikit_learn_names_the_install(reviews, monkeypatch):
    (train, train_labels), (dev, dev_labels), _ = reviews
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.feature_extraction.text", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        TfidfLogisticRegression().fit(train, train_labels, dev, dev_labels)


def test_fasttext_learns_a_separable_set_and_is_seeded(reviews):
    (train, train_labels), (dev, dev_labels), (test, test_labels) = reviews
    settings = {"dim": 16, "buckets": 1024, "epochs": 6, "learning_rates": (0.01, 0.03), "batch_size": 16}
    model = FastTextClassifier(**settings, seed=1).fit(train, train_labels, dev, dev_labels)
    assert accuracy(model, test, test_labels) >= 0.9
    chosen = model.selection
    assert chosen["learning_rate"] in (0.01, 0.03) and 1 <= chosen["epochs"] <= 6
    by_epoch = chosen["dev_macro_f1_by_learning_rate_and_epoch"]
    assert chosen["dev_macro_f1"] == max(max(scores) for scores in by_epoch.values())
    probabilities = model.predict_proba(test + ["", "完全没见过的词"])  # an empty text and unknown words too
    assert probabilities.shape == (len(test) + 2, 2) and np.allclose(probabilities.sum(-1), 1)
    again = FastTextClassifier(**settings, seed=1).fit(train, train_labels, dev, dev_labels)
    other = FastTextClassifier(**settings, seed=2).fit(train, train_labels, dev, dev_labels)
    assert np.array_equal(again.predict_proba(test), model.predict_proba(test))
    assert not np.allclose(other.predict_proba(test), model.predict_proba(test))


def test_tfidf_on_multihot_rows_is_one_vs_rest_with_a_threshold_chosen_on_dev(reviews):
    from sklearn.linear_model import LogisticRegression

    (train, train_labels), (dev, dev_labels), (test, test_labels) = reviews

    def hot(texts, labels):  # label 0/1 and "mentions a film" (这部电影), a second label on some texts
        return np.array([[label == 0, label == 1, text.startswith("这部电影")] for text, label in zip(texts, labels)],
                        dtype=np.float32)  # fmt: skip

    model = TfidfLogisticRegression(c_grid=(1.0, 16.0)).fit(train, hot(train, train_labels), dev, hot(dev, dev_labels))
    assert model.multi_label and set(model.selection["dev_micro_f1_by_C"]) == {1.0, 16.0}
    assert 0.05 <= model.threshold <= 0.95 and model.selection["threshold"] == model.threshold
    probabilities = model.predict_proba(test)
    assert probabilities.shape == (len(test), 3)
    x = model.vectorizer.transform(test)
    for label in range(3):  # each column: that label's own binary logistic regression
        binary = LogisticRegression(C=model.selection["C"], max_iter=2000)
        binary.fit(model.vectorizer.transform(train), hot(train, train_labels)[:, label] > 0.5)
        np.testing.assert_allclose(probabilities[:, label], binary.predict_proba(x)[:, 1], atol=1e-6)
    assert ((probabilities >= model.threshold) == hot(test, test_labels)).all(-1).mean() >= 0.9


def test_balanced_tfidf_weights_the_rare_class_up(reviews):
    from finetune.evaluation.baselines import BASELINES, TfidfBalanced

    (train, train_labels), (dev, dev_labels), _ = reviews
    keep = [i for i, label in enumerate(train_labels) if label == 1 or i % 6 == 0]  # negative rare
    texts, labels = [train[i] for i in keep], [train_labels[i] for i in keep]
    plain = TfidfLogisticRegression(c_grid=(0.5,)).fit(texts, labels, dev, dev_labels)
    balanced = BASELINES["tfidf_lr_balanced"](c_grid=(0.5,)).fit(texts, labels, dev, dev_labels)
    assert isinstance(balanced, TfidfBalanced) and balanced.model.class_weight == "balanced"
    # the rare class gets more probability from the balanced model on every dev text
    assert (balanced.predict_proba(dev)[:, 0] > plain.predict_proba(dev)[:, 0]).all()


def test_trainer_baseline_fine_tunes_the_checkpoint_with_the_recipes_settings(reviews, tiny_bert, quiet_datasets):
    from finetune.config.config_files import find_config
    from finetune.config.parsing import parse_run_args
    from finetune.evaluation.baselines import BASELINES, TrainerClassifier

    (train, train_labels), (dev, dev_labels), (test, test_labels) = reviews
    run_args = parse_run_args(["--config", str(find_config("bert_bilstm_attn")), "--model_name_or_path",
                               str(tiny_bert), "--num_train_epochs", "6", "--learning_rate", "0.002",
                               "--per_device_train_batch_size", "8", "--max_seq_length", "32"])[0]  # fmt: skip
    model = BASELINES["trainer"].from_run_args(run_args, seed=3)
    assert (model.model_name_or_path, model.num_train_epochs, model.learning_rate) == (str(tiny_bert), 6, 0.002)
    assert (model.per_device_train_batch_size, model.max_seq_length, model.seed) == (8, 32, 3)
    model.fit(train, train_labels, dev, dev_labels)
    probabilities = model.predict_proba(test)
    assert probabilities.shape == (len(test), 2) and np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    assert accuracy(model, test, test_labels) >= 0.9  # the sentiment word decides the label
    selection = model.selection
    assert len(selection["dev_macro_f1_by_epoch"]) == 6 and selection["dev_macro_f1"] >= 0.9
    assert selection["train_samples_per_second"] > 0 and selection["train_seconds"] > 0
    again = TrainerClassifier.from_run_args(run_args, seed=3).fit(train, train_labels, dev, dev_labels)
    assert np.allclose(again.predict_proba(test), probabilities, atol=1e-5)  # seeded


def test_trainer_baseline_without_an_encoder_or_on_multilabel_rows_is_one_line(reviews):
    from finetune.errors import ArgumentError
    from finetune.evaluation.baselines import TrainerClassifier

    (train, train_labels), (dev, dev_labels), _ = reviews
    with pytest.raises(ArgumentError, match="needs an encoder: --recipe_args '--model_name_or_path PATH'"):
        TrainerClassifier().fit(train, train_labels, dev, dev_labels)
    with pytest.raises(ArgumentError, match="one label a text"):
        TrainerClassifier(model_name_or_path="x").fit(train, [[0, 1]] * len(train), dev, [[0, 1]] * len(dev))
