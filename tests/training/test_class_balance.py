"""Class imbalance end to end: --class_weights, --loss focal and label-F1 model selection with every
encoder (two processes: test_recipe.py's DDP test); the class distribution in the log, metrics.json and the card."""

import json
import sys
from types import SimpleNamespace

import pytest
from conftest import BERT_CONFIG, BILM_CONFIG, ROOT, encoder_recipe_args, make_reviews, tiny_recipe_args, write_csv

from finetune.errors import ArgumentError

sys.path.insert(0, str(ROOT))
from finetune.recipes.train_bilstm_attention import main  # noqa: E402


@pytest.fixture(scope="module")
def imbalanced_csv(tmp_path_factory):
    """150 positive and 30 negative templated reviews (1 in 6 negative)."""
    rows = make_reviews(150, seed=3)
    negatives = [row for row in rows if row[1] == "negative"][:30]
    kept = [row for row in rows if row[1] == "positive"] + negatives
    return write_csv(tmp_path_factory.mktemp("imbalanced") / "reviews.csv", sorted(kept))


def test_word_vectors_with_balanced_focal_loss_and_label_f1_selection(imbalanced_csv, tiny_vectors, tmp_path, caplog):
    output_dir = tmp_path / "run"
    # the loss's own effect: without the TF-IDF branch, whose class weights test_tfidf_branch checks (fitted on
    # 24 negative texts, the balanced branch alone reads 2 of the 3 test negatives as positive)
    extra = ["--class_weights", "balanced", "--loss", "focal", "--metric_for_best_model", "f1:negative",
             "--tfidf_branch", "false"]  # fmt: skip
    with caplog.at_level("INFO"):
        metrics = main(tiny_recipe_args(imbalanced_csv, tiny_vectors, output_dir, *extra))
    distribution = metrics["data"]["class_distribution"]
    train = distribution["train"]
    assert train["negative"]["count"] + train["positive"]["count"] == 144  # 180 less 10% + 10%
    assert train["negative"]["share"] == pytest.approx(24 / 144)
    assert sum(row["count"] for row in distribution["test"].values()) == 18
    weights = [144 / (2 * train[label]["count"]) for label in ("negative", "positive")]
    assert f"training loss: focal (gamma 2), class weights negative {weights[0]:.3f}, positive {weights[1]:.3f}" in (
        caplog.text
    )
    assert "class distribution, train: negative 24 (16.7%), positive 120 (83.3%)" in caplog.text
    assert metrics["validation_per_class"]["negative"]["f1"] >= 0.9
    assert metrics["test_per_class"]["negative"]["recall"] >= 2 / 3  # the rare label is found (3 in test)
    saved = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert saved["data"]["class_distribution"] == distribution
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "Class distribution (texts per label, share of the split): train negative 24 (16.7%), positive 120" in card
    assert "Loss: focal (gamma 2.0), class weights balanced; the best model by validation f1:negative" in card
    # the saved model is the plain classifier: its config knows nothing of the loss
    config = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert not {"class_weights", "loss", "focal_gamma"} & set(config)


def test_label_f1_and_micro_f1_pick_the_best_model():
    from finetune.evaluation.metrics import metric_value
    from finetune.training.loop import EarlyStopping, Schedule

    evaluations = [  # the rare label's F1 peaks at the second evaluation, macro-F1 at the third
        {"validation_macro_f1": 0.70, "validation_per_class": {"neg": {"f1": 0.40}, "pos": {"f1": 1.0}}},
        {"validation_macro_f1": 0.75, "validation_per_class": {"neg": {"f1": 0.60}, "pos": {"f1": 0.9}}},
        {"validation_macro_f1": 0.80, "validation_per_class": {"neg": {"f1": 0.55}, "pos": {"f1": 1.0}}},
    ]
    for name, best in (("f1:neg", 1), ("macro_f1", 2)):
        stopper = EarlyStopping(patience=0)
        chosen = [i for i, metrics in enumerate(evaluations) if stopper.update(metric_value(metrics, name))]
        assert chosen[-1] == best
    args = SimpleNamespace(
        training=SimpleNamespace(
            num_train_epochs=1,
            max_steps=-1,
            gradient_accumulation_steps=1,
            eval_strategy="epoch",
            save_strategy="epoch",
            save_steps=1,
            greater_is_better=None,
            metric_for_best_model="eval_f1:neg",
        ),  # fmt: skip
        logging=SimpleNamespace(logging_steps=1),
    )
    schedule = Schedule.of(args, batches=4, num_processes=1)
    assert (schedule.metric, schedule.greater) == ("f1:neg", True)


@pytest.mark.parametrize(
    "encoder_type, config, fixture",
    [("transformer", BERT_CONFIG, "tiny_bert"), ("bilm", BILM_CONFIG, "tiny_bilm")],
)
def test_pretrained_encoders_train_with_explicit_weights(encoder_type, config, fixture, imbalanced_csv, tmp_path,
                                                          caplog, request):  # fmt: skip
    extra = ["--class_weights", "4,1", "--loss", "focal", "--focal_gamma", "1", "--metric_for_best_model", "micro_f1"]
    with caplog.at_level("INFO"):
        metrics = main(encoder_recipe_args(config, imbalanced_csv, request.getfixturevalue(fixture), tmp_path, *extra))
    assert "training loss: focal (gamma 1), class weights negative 4.000, positive 1.000" in caplog.text
    assert metrics["validation_micro_f1"] == metrics["validation_accuracy"]
    assert metrics["train_steps"] == 18  # 144 texts, batch 16, 2 epochs
    assert set(metrics["data"]["class_distribution"]) == {"train", "validation", "test"}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--class_weights", "1,2,3"], r"^--class_weights 1,2,3: 3 weight\(s\) for 2 labels \(negative, positive"),
        (["--metric_for_best_model", "f1:neutral"], r"f1:neutral: no label 'neutral' \(the labels: negative, pos"),
        (["--metric_for_best_model", "f2"], r"^--metric_for_best_model f2: must be one of .*, or f1:LABEL$"),
        (["--loss", "hinge"], r"^--loss hinge: must be one of cross_entropy, focal$"),
        (["--focal_gamma", "-1"], r"^--focal_gamma -1.0: must be 0 or more$"),
    ],
)
def test_bad_imbalance_flags_are_one_line_errors(flags, message, imbalanced_csv, tiny_vectors, tmp_path):
    with pytest.raises(ArgumentError, match=message):
        main(tiny_recipe_args(imbalanced_csv, tiny_vectors, tmp_path / "run", *flags))
    assert not (tmp_path / "run").exists()  # refused before the run directory was touched
