"""Multi-label classification end to end: label lists and separated strings, the stratified split,
thresholds tuned on validation and used by every reader of the model, metrics, the three encoders
and two processes."""

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    BERT_CONFIG,
    BILM_CONFIG,
    ROOT,
    WITHOUT_FINETUNE,
    encoder_recipe_args,
    load_splits,
    make_aspect_reviews,
    run_launch,
    run_pipeline,
    tiny_recipe_args,
)
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from finetune.data.loading import DataError
from finetune.data.multilabel import iterative_stratification, multilabel_metrics, tune_thresholds


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def aspect_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("aspects")
    sizes = {"train": (240, 0), "validation": (60, 1), "test": (60, 2)}
    return {
        split: write_jsonl(folder / f"{split}.jsonl", make_aspect_reviews(n, seed))
        for split, (n, seed) in sizes.items()
    }


##### Data #####


def test_jsonl_lists_and_csv_with_separator_load_the_same_label_sets(tmp_path, quiet_datasets):
    rows = make_aspect_reviews(60, seed=3)
    jsonl = write_jsonl(tmp_path / "r.jsonl", rows)
    csv = tmp_path / "r.csv"
    csv.write_text("text,label\n" + "".join(f"{r['text']},{' | '.join(r['label'])}\n" for r in rows), encoding="utf-8")
    from_lists, info = load_splits(jsonl, validation_size=0.2, test_size=0.2, seed=1)
    from_strings, csv_info = load_splits(csv, label_separator="|", validation_size=0.2, test_size=0.2, seed=1)
    assert info["problem_type"] == csv_info["problem_type"] == "multi_label_classification"
    assert info["id2label"] == csv_info["id2label"] == {0: "价格", 1: "物流", 2: "质量"}  # sorted, as single labels
    truth = {row["text"]: sorted(row["label"]) for row in rows}
    for splits, empty_rows_kept in ((from_lists, True), (from_strings, False)):
        seen = 0
        for part in splits.values():
            assert part.features["label"].feature.dtype == "float32"
            for text, vector in zip(part["text"], part["label"]):
                assert [info["id2label"][i] for i, on in enumerate(vector) if on] == truth[text]
                seen += 1
        # a JSON [] is a review of no aspect; an empty CSV cell is a missing label, dropped as today
        assert seen == (60 if empty_rows_kept else sum(1 for row in rows if row["label"]))
    # --problem_type multi_label_classification makes single labels sets of one
    single = tmp_path / "single.csv"
    single.write_text("text,label\n" + "".join(f"文本{i},{'甲乙'[i % 2]}\n" for i in range(20)), encoding="utf-8")
    splits, info = load_splits(single, problem_type="multi_label_classification", seed=0)
    assert info["problem_type"] == "multi_label_classification"
    assert all(sum(vector) == 1 for vector in splits["train"]["label"])


def test_iterative_stratification_keeps_each_labels_share_and_every_label_in_train():
    rng = random.Random(0)
    label_sets = [[label for label in range(5) if rng.random() < (0.5 if label < 4 else 0.02)] for _ in range(500)]
    fractions = [0.8, 0.1, 0.1]
    assigned = iterative_stratification(label_sets, fractions, seed=7)
    assert np.array_equal(assigned, iterative_stratification(label_sets, fractions, seed=7))  # seeded
    assert not np.array_equal(assigned, iterative_stratification(label_sets, fractions, seed=8))
    for label in range(4):
        rows = [row for row, labels in enumerate(label_sets) if label in labels]
        for subset, fraction in enumerate(fractions):
            # each label's share within two rows of the wanted one (a random split misses by ~7 here)
            assert abs(sum(assigned[row] == subset for row in rows) - fraction * len(rows)) <= 2
    assert np.bincount(assigned).tolist() == pytest.approx([400, 50, 50], abs=3)


def test_split_of_one_file_keeps_a_rare_label_in_train(tmp_path, quiet_datasets):
    rows = make_aspect_reviews(80, seed=4)
    rows[5]["label"] = ["罕见"]  # a label of one row: it must train, not be held out
    splits, info = load_splits(write_jsonl(tmp_path / "r.jsonl", rows), validation_size=0.2, test_size=0.2, seed=0)
    train = np.asarray(splits["train"]["label"])
    assert (train.sum(0) > 0).all() and "罕见" in info["label2id"]
    again, _ = load_splits(write_jsonl(tmp_path / "r.jsonl", rows), validation_size=0.2, test_size=0.2, seed=0)
    assert again["test"]["text"] == splits["test"]["text"]  # deterministic
    capped, _ = load_splits(tmp_path / "r.jsonl", validation_size=0.2, test_size=0.2, seed=0, max_train_samples=12)
    assert capped["train"].num_rows == 12 and (np.asarray(capped["train"]["label"]).sum(0) > 0).all()  # 罕见 too


@pytest.mark.parametrize(
    "train, validation, kwargs, message",
    [
        ([["a"], ["b", ""]], None, {}, r"r\.jsonl: line 2: the label list \['b', ''\] holds an empty or nested label"),
        ([["a"], "b"], None, {}, r"line 2: label 'b' is not a list, while other rows' labels are"),
        ([["a"], ["b"]], None, {"label_separator": "|"}, r"line 1: the labels are already lists .*--label_separator"),
        ([["a"], ["a", "b"]], None, {"problem_type": "single_label_classification"}, r"line 2: 2 labels \['a', 'b'\]"),
        ([["a"], ["b"]], [["a"], ["a", "c"]], {}, r"v\.jsonl: line 2: label 'c' never occurs in .*r\.jsonl"),
        ([["a"], ["b"]], None, {"problem_type": "multi"}, r"--problem_type must be single_label_classification or"),
    ],
)
def test_bad_multilabel_input_is_one_line_naming_file_and_row(
    tmp_path, quiet_datasets, train, validation, kwargs, message
):
    from finetune.errors import ArgumentError

    def rows(labels, prefix):
        return [{"text": f"{prefix}{i}", "label": label} for i, label in enumerate(labels)]

    files = {"train_file": write_jsonl(tmp_path / "r.jsonl", rows(train, "文本"))}
    if validation is not None:
        files["validation_file"] = write_jsonl(tmp_path / "v.jsonl", rows(validation, "另"))

    with pytest.raises((DataError, ArgumentError), match=message) as error:
        load_splits(**files, **kwargs)
    assert "\n" not in str(error.value)


##### Thresholds and metrics #####


def test_thresholds_maximise_f1_globally_or_per_label():
    # label 0 is right above 0.3, label 1 above 0.7: per label finds both, one global threshold cannot
    probabilities = np.array([[0.35, 0.75], [0.32, 0.2], [0.1, 0.72], [0.2, 0.6], [0.05, 0.5], [0.4, 0.9]])
    truth = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [0, 0], [1, 1]])
    per_label = tune_thresholds(probabilities, truth, "per_label", "micro_f1", min_positives=2)
    assert 0.2 < per_label[0] <= 0.32 and 0.6 < per_label[1] <= 0.72
    assert f1_score(truth, probabilities >= per_label, average="macro") == 1.0
    global_ = tune_thresholds(probabilities, truth, "global", "micro_f1")
    assert global_[0] == global_[1]
    best = max(f1_score(truth, probabilities >= t, average="micro") for t in np.arange(0.05, 0.96, 0.01))
    assert f1_score(truth, probabilities >= global_, average="micro") == pytest.approx(best)


def test_a_label_with_few_validation_positives_keeps_the_global_threshold():
    probabilities = np.array([[0.35, 0.75], [0.32, 0.2], [0.1, 0.72], [0.2, 0.6], [0.05, 0.5], [0.4, 0.9]])
    truth = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [0, 0], [1, 1]])
    global_ = tune_thresholds(probabilities, truth, "global", "micro_f1")
    # label 1 has 3 positives, label 0 has 3: with 4 needed neither gets its own
    assert tune_thresholds(probabilities, truth, "per_label", "micro_f1", min_positives=4).tolist() == global_.tolist()
    truth[3, 0] = 1  # label 0 now has 4 (right from 0.2 up): its own threshold; label 1 the global one
    mixed = tune_thresholds(probabilities, truth, "per_label", "micro_f1", min_positives=4)
    assert mixed[0] == 0.2 and mixed[1] == tune_thresholds(probabilities, truth, "global", "micro_f1")[1]


@pytest.mark.parametrize("metric", ["micro_f1", "macro_f1"])
@pytest.mark.parametrize("strategy", ["global", "per_label"])
def test_tuned_thresholds_never_score_below_one_half_or_the_global_threshold(metric, strategy):
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = rng.random((60, 4)) < [0.5, 0.3, 0.1, 0.05]
        probabilities = np.clip(truth * 0.3 + rng.random((60, 4)) * 0.7, 0, 1)
        average = metric.removesuffix("_f1")
        score = lambda t: f1_score(truth, probabilities >= t, average=average, zero_division=0)  # noqa: E731
        tuned = tune_thresholds(probabilities, truth, strategy, metric, min_positives=5)
        assert score(tuned) >= score(np.full(4, 0.5)) - 1e-12
        assert score(tuned) >= score(tune_thresholds(probabilities, truth, "global", metric)) - 1e-12


def test_classifier_biases_start_at_each_labels_log_odds():
    import torch

    from finetune.training.builders import init_label_priors

    classifier = torch.nn.Linear(4, 3)
    rows = [[1.0, 0.0, 0.0]] * 9 + [[1.0, 1.0, 0.0]]  # shares 1.0, 0.1, 0.0
    init_label_priors(classifier, rows)
    bias = classifier.bias.detach().numpy()
    assert bias[1] == pytest.approx(np.log(0.1 / 0.9), rel=1e-6)
    assert bias[0] > 9 and bias[2] < -9 and np.isfinite(bias).all()  # every / no row: large, finite
    assert float(torch.sigmoid(classifier.bias)[1]) == pytest.approx(0.1, rel=1e-5)


def test_metrics_match_scikit_learn_on_a_hand_made_example():
    truth = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    predicted = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0]])
    metrics = multilabel_metrics(predicted, truth, {0: "a", 1: "b", 2: "c"}, prefix="test_")
    assert metrics["test_micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"))  # 8/11
    assert metrics["test_micro_f1"] == pytest.approx(8 / 11)
    assert metrics["test_macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0))
    assert metrics["test_weighted_f1"] == pytest.approx(f1_score(truth, predicted, average="weighted", zero_division=0))
    assert metrics["test_exact_match"] == metrics["test_accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert metrics["test_exact_match"] == pytest.approx(2 / 5)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    for i, label in enumerate("abc"):
        row = metrics["test_per_class"][label]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == pytest.approx(
            (precision[i], recall[i], f1[i], support[i])
        )
    assert metrics["test_per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 1}
    assert metrics["test_num_examples"] == 5


##### The recipe, pipeline(), finetune predict and evaluate #####


@pytest.fixture(scope="module")
def word_vector_run(aspect_files, tiny_vectors, tmp_path_factory, offline):
    sys.path.insert(0, str(ROOT))
    from finetune.recipes.train_bilstm_attention import main

    output_dir = tmp_path_factory.mktemp("multilabel_run")
    args = tiny_recipe_args(
        aspect_files["train"], tiny_vectors, output_dir,
        "--validation_file", str(aspect_files["validation"]), "--test_file", str(aspect_files["test"]),
        "--num_train_epochs", "8", "--threshold_strategy", "per_label",
    )  # fmt: skip
    main(args)
    return output_dir


def test_recipe_trains_multilabel_and_saves_tuned_thresholds(word_vector_run):
    metrics = json.loads((word_vector_run / "metrics.json").read_text(encoding="utf-8"))
    config = json.loads((word_vector_run / "config.json").read_text(encoding="utf-8"))
    assert config["problem_type"] == "multi_label_classification"
    assert set(config["label_thresholds"]) == {"价格", "物流", "质量"}
    assert metrics["thresholds"]["label_thresholds"] == config["label_thresholds"]
    assert metrics["thresholds"]["strategy"] == "per_label"
    # tuned on validation: at least as good there as 0.5
    assert metrics["thresholds"]["validation_micro_f1_tuned"] >= metrics["thresholds"]["validation_micro_f1_at_0.5"]
    # metric_for_best_model left unset: micro-F1 for multi-label data, recorded; each epoch scored at tuned thresholds
    assert "metric_for_best_model: micro_f1" in (word_vector_run / "config.yaml").read_text(encoding="utf-8")
    assert all("micro_f1" in row for row in metrics["history"]["eval"])
    assert metrics["validation_micro_f1"] == max(row["micro_f1"] for row in metrics["history"]["eval"])
    # the one-vs-rest TF-IDF branch, its share chosen by validation micro-F1, then the thresholds on the mixture
    branch = metrics["tfidf_branch"]
    assert config["tfidf_num_ngrams"] == branch["ngrams"] > 50 and config["tfidf_mix_weight"] == branch["mix_weight"]
    assert {float(w) for w in branch["validation_micro_f1_by_mix_weight"]} == {round(0.1 * i, 1) for i in range(11)}
    assert metrics["thresholds"]["validation_micro_f1_tuned"] == pytest.approx(
        max(branch["validation_micro_f1_by_mix_weight"].values()), abs=0.03
    )  # per-label thresholds may add a little
    assert metrics["test_num_examples"] == 60
    assert metrics["test_micro_f1"] >= 0.85 and metrics["test_exact_match"] >= 0.5
    assert sum(row["support"] for row in metrics["test_per_class"].values()) == sum(
        len(row["label"]) for row in make_aspect_reviews(60, 2)
    )
    losses = [row["loss"] for row in metrics["history"]["train"]]
    assert losses[-1] < 0.7 * losses[0]
    assert (word_vector_run / "label_scores.png").stat().st_size > 0
    assert not (word_vector_run / "confusion_matrix.png").exists()
    card = (word_vector_run / "README.md").read_text(encoding="utf-8")
    assert "`label_thresholds`" in card and "| 物流 |" in card
    assert "logistic regression (one-vs-rest: one per label)" in card


def _sigmoid_scores(model_dir: Path, texts: list[str]) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return np.stack([model(**tokenizer(text, return_tensors="pt")).logits.sigmoid()[0].numpy() for text in texts])


def test_pipeline_gives_every_labels_sigmoid_score_also_without_finetune(word_vector_run):
    texts = ["快递很快，价格便宜", "质量很好", "这次购物"]
    best = word_vector_run
    expected = _sigmoid_scores(best, texts)
    labels = ["价格", "物流", "质量"]
    portable = run_pipeline(best, texts, WITHOUT_FINETUNE, env=dict(os.environ), cwd=best)
    assert all(module.startswith("transformers_modules") for module in portable["modules"])
    for row, scores in zip(expected, portable["scores"]):
        got = {entry["label"]: entry["score"] for entry in scores}
        assert [got[label] for label in labels] == pytest.approx(row.tolist(), abs=1e-5)
    assert sum(entry["score"] for entry in portable["scores"][0]) > 1  # sigmoids: no distribution over labels
    assert expected[0][[0, 1]].min() > 0.5 and expected[2].max() < 0.5  # the model learned the aspects


def test_predict_and_evaluate_use_the_saved_thresholds(word_vector_run, aspect_files, tmp_path):
    from finetune.evaluation.saved_model import evaluate_file
    from finetune.inference.file_labelling import predict_file

    best = word_vector_run
    thresholds = json.loads((best / "config.json").read_text(encoding="utf-8"))["label_thresholds"]
    output = tmp_path / "predicted.jsonl"
    assert predict_file(best, aspect_files["test"], output) == 60
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert row["predicted_labels"] == [
            label for label in sorted(thresholds) if row[f"score_{label}"] >= thresholds[label]
        ]
    metrics = json.loads((word_vector_run / "metrics.json").read_text(encoding="utf-8"))
    predicted = np.array([[label in row["predicted_labels"] for label in sorted(thresholds)] for row in rows])
    truth = np.array([[label in row["label"] for label in sorted(thresholds)] for row in rows])
    assert f1_score(truth, predicted, average="micro") == pytest.approx(metrics["test_micro_f1"])
    evaluated = evaluate_file(best, aspect_files["test"], tmp_path / "evaluation")
    for key in ("test_micro_f1", "test_macro_f1", "test_exact_match"):
        assert evaluated[key] == pytest.approx(metrics[key])
    assert (tmp_path / "evaluation" / "label_scores.png").exists()


##### The other encoders, two processes, distillation #####


@pytest.mark.parametrize("encoder_type", ["transformer", "bilm"])
def test_pretrained_encoders_train_multilabel(encoder_type, aspect_files, tmp_path, request, offline):
    sys.path.insert(0, str(ROOT))
    from finetune.recipes.train_bilstm_attention import main

    config, encoder = {"transformer": (BERT_CONFIG, "tiny_bert"), "bilm": (BILM_CONFIG, "tiny_bilm")}[encoder_type]
    output_dir = tmp_path / encoder_type
    # the biLM config freezes its encoder and trains the head at head_learning_rate (test_encoders does the same)
    rates = ["--learning_rate", "0.01", "--head_learning_rate", "0.01"]
    encoder_dir = request.getfixturevalue(encoder)
    main(encoder_recipe_args(config, aspect_files["train"], encoder_dir, output_dir, "--num_train_epochs", "3", *rates))
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    saved = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert saved["problem_type"] == "multi_label_classification" and len(saved["label_thresholds"]) == 3
    assert metrics["test_micro_f1"] > 0.6  # a 2-layer BERT / biLM of hidden size 32 / 16 from scratch, 3 epochs
    scores = run_pipeline(output_dir, ["快递很快"])[0]
    assert len(scores) == 3 and all(0 < entry["score"] < 1 for entry in scores)


def test_two_processes_train_multilabel(aspect_files, tiny_vectors, tmp_path):
    output_dir = tmp_path / "ddp"
    args = tiny_recipe_args(aspect_files["train"], tiny_vectors, output_dir,
                            "--test_file", str(aspect_files["test"]), "--num_train_epochs", "4")  # fmt: skip
    result = run_launch(args, 2, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI_CPU, 2 process(es)" in result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_num_examples"] == 60  # every test text once, none padded in
    assert metrics["test_micro_f1"] >= 0.7
    assert len(json.loads((output_dir / "config.json").read_text(encoding="utf-8"))["label_thresholds"]) == 3


def test_distillation_refuses_multilabel_data():
    from finetune.errors import ArgumentError
    from finetune.training.distillation import check_single_label

    with pytest.raises(ArgumentError, match="multi-label data .* cannot be distilled"):
        check_single_label("multi_label_classification")
    check_single_label("single_label_classification")


def test_exact_match_is_refused_as_best_model_metric_of_a_single_label_run():
    from types import SimpleNamespace

    from finetune.errors import ArgumentError
    from finetune.training.phases import check_metric_for_problem

    with pytest.raises(ArgumentError, match="exact match is a multi-label metric"):
        check_metric_for_problem("eval_exact_match", SimpleNamespace(problem_type="single_label_classification"))
    check_metric_for_problem("exact_match", SimpleNamespace(problem_type="multi_label_classification"))


def test_onnx_backend_applies_sigmoid_and_the_saved_thresholds(word_vector_run, aspect_files, tmp_path):
    from finetune.inference.export import export_onnx
    from finetune.inference.file_labelling import predict_file

    best = word_vector_run
    export_onnx(best)
    torch_rows, onnx_rows = tmp_path / "torch.jsonl", tmp_path / "onnx.jsonl"
    predict_file(best, aspect_files["test"], torch_rows)
    predict_file(best, aspect_files["test"], onnx_rows, backend="onnx")
    expected = [json.loads(line) for line in torch_rows.read_text(encoding="utf-8").splitlines()]
    got = [json.loads(line) for line in onnx_rows.read_text(encoding="utf-8").splitlines()]
    assert [row["predicted_labels"] for row in got] == [row["predicted_labels"] for row in expected]
    for label in ("价格", "物流", "质量"):
        assert [row[f"score_{label}"] for row in got] == pytest.approx(
            [row[f"score_{label}"] for row in expected], abs=1e-4
        )
