"""Distillation: the augmentation, the loss, the teachers' cached logits, and the recipe end to end
(one process in-process, two under `accelerate launch`), on the tiny reviews with a tiny teacher."""

import json
import math
import os
import random
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, free_port, make_reviews, run_pipeline, run_processes

from finetune.config.distill_arguments import parse_distill_args
from finetune.data.augmentation import MASK, TransferAugmenter, augment_texts, tag_words
from finetune.data.loading import load_data
from finetune.devices import create_accelerator
from finetune.errors import ArgumentError, report_errors
from finetune.training import distillation
from finetune.training.distillation import (
    distillation_loss,
    ensemble_logits,
    label_order,
    teacher_logits,
    transfer_texts,
)

torch.set_num_threads(1)
DISTILL = ROOT / "recipes" / "distill_bilstm_attention.py"
DISTILL_CONFIG = ROOT / "recipes" / "configs" / "distill_bilstm_attn.yaml"
LONG_TEXT = "这部电影的故事很精彩，演员的表演也非常自然，画面漂亮，音乐动听，我和朋友都很喜欢，下次还会再来看。"


def distill_args(train_file, vectors, output_dir, *teachers, extra=()):
    return [
        "--config", str(DISTILL_CONFIG), "--train_file", str(train_file), "--word_vectors", str(vectors),
        "--output_dir", str(output_dir), "--teacher_model_name_or_path", *map(str, teachers),
        "--lstm_hidden_size", "16", "--attention_dim", "16", "--num_train_epochs", "3", "--min_freq", "1",
        "--per_device_train_batch_size", "32", "--learning_rate", "0.01", "--logging_steps", "5",
        "--word_dropout", "0", "--augment_copies", "2", "--early_stopping_patience", "0", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def teacher(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def tiny_bert_classifier(tiny_bert, tmp_path_factory):
    """A tiny BERT sequence classifier (untrained) with the reviews' labels in the other order."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    config = BertConfig.from_pretrained(tiny_bert, num_labels=2, id2label={0: "positive", 1: "negative"})
    path = tmp_path_factory.mktemp("bert-teacher")
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(path)
    return path


def test_masking_rate_and_ngram_lengths():
    tagged = tag_words([LONG_TEXT])
    words = [w for w, _ in tagged[0]]
    rng = random.Random(0)
    masked = TransferAugmenter(tagged, p_mask=0.3, p_pos=0, p_ng=0, seed=0)
    copies = [masked.augment(tagged[0], rng) for _ in range(400)]
    rate = sum(c.count(MASK) for c in copies) / (len(words) * len(copies))
    assert abs(rate - 0.3) < 0.02
    assert all(len(c) == len(words) for c in copies)
    cut = TransferAugmenter(tagged, p_mask=0, p_pos=0, p_ng=1, seed=0)
    grams = [cut.augment(tagged[0], rng) for _ in range(300)]
    assert {len(g) for g in grams} == {1, 2, 3, 4, 5}
    assert all(any(words[i : i + len(g)] == g for i in range(len(words))) for g in grams)  # contiguous


def test_same_pos_replacement_keeps_the_part_of_speech():
    texts = [text for text, _ in make_reviews(30, seed=0)] + [LONG_TEXT]
    tagged = tag_words(texts)
    augmenter = TransferAugmenter(tagged, p_mask=0, p_pos=1, p_ng=0, seed=0)
    rng, changed = random.Random(1), 0
    for words in tagged[:20]:
        copy = augmenter.augment(words, rng)
        assert all(new in augmenter.words_by_tag[tag] for new, (_, tag) in zip(copy, words))
        changed += sum(new != old for new, (old, _) in zip(copy, words))
    assert changed > 20


def test_augmentation_is_seeded():
    texts = [text for text, _ in make_reviews(10, seed=3)]
    first = augment_texts(texts, 5, 0.1, 0.1, 0.25, seed=7)
    assert first == augment_texts(texts, 5, 0.1, 0.1, 0.25, seed=7)
    assert first != augment_texts(texts, 5, 0.1, 0.1, 0.25, seed=8)
    assert 0 < len(first) <= 5 * len(texts) and not set(first) & set(texts)


def test_transfer_set_gold_labels_only_on_training_texts(tmp_path):
    from finetune.config.distill_arguments import DistillationArguments

    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("房间很大，早餐一般。\n\n这部电影很好。\n客服回复很慢。\n", encoding="utf-8")
    train = ["这部电影很好。", "快递太差劲了。"]
    settings = DistillationArguments(
        augment_copies=3, unlabelled_file=str(unlabelled), unlabelled_corpus=True, max_unlabelled_samples=4
    )
    texts, labels, counts = transfer_texts(train, [1, 0], settings, "text", seed=0)
    assert texts[:2] == train and labels[:2] == [1, 0] and set(labels[2:]) == {-1}
    assert counts["unlabelled"] <= 4 and counts["total"] == len(texts) == len(set(texts))
    assert counts == {"labelled": 2, "augmented": counts["augmented"], "unlabelled": counts["unlabelled"],
                      "total": 2 + counts["augmented"] + counts["unlabelled"]}  # fmt: skip


def test_loss_values_alpha_and_unlabelled_rows():
    student = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 1.0], [3.0, 1.0]])
    labels = torch.tensor([1, -1, -1])
    mse = ((1 + 4) + (1 + 1) + (0 + 4)) / 6
    assert distillation_loss(student, teacher, labels, alpha=1.0).item() == pytest.approx(mse)
    ce = -torch.log_softmax(student[0], -1)[1].item()  # the one labelled row only
    assert distillation_loss(student, teacher, labels, alpha=0.0).item() == pytest.approx(ce)
    assert distillation_loss(student, teacher, labels, alpha=0.25).item() == pytest.approx(0.25 * mse + 0.75 * ce)
    none = torch.tensor([-1, -1, -1])  # no gold label in the batch: the teacher term alone
    assert distillation_loss(student, teacher, none, alpha=0.25).item() == pytest.approx(0.25 * mse)
    p, q = torch.softmax(teacher / 2, -1), torch.log_softmax(student / 2, -1)
    kl = (p * (p.log() - q)).sum(-1).mean().item() * 4
    assert distillation_loss(student, teacher, labels, loss="kl", alpha=1.0, temperature=2.0).item() == (
        pytest.approx(kl)
    )


def test_ensemble_averages_probabilities_and_labels_are_matched():
    a, b = np.array([[2.0, 0.0]], np.float32), np.array([[0.0, 0.0]], np.float32)
    expected = np.log((np.exp(a) / np.exp(a).sum() + 0.5) / 2)
    assert np.allclose(ensemble_logits([a, b]), expected, atol=1e-6)
    assert np.array_equal(ensemble_logits([a]), a)
    assert label_order("t", {0: "positive", 1: "negative"}, {0: "negative", 1: "positive"}) == [1, 0]
    with pytest.raises(ArgumentError, match="its labels .* are not the data's"):
        label_order("t", {0: "pos", 1: "neg"}, {0: "negative", 1: "positive"})


def test_teacher_logits_are_cached_and_ensembles_average(teacher, tiny_bert_classifier, monkeypatch):

    accelerator, id2label = create_accelerator(), {0: "negative", 1: "positive"}
    texts = [text for text, _ in make_reviews(8, seed=5)] + [LONG_TEXT * 3]  # longer than the BERT's 64 positions
    logits, sources = teacher_logits([str(teacher)], texts, id2label, accelerator)
    assert sources == {str(teacher): "computed"} and logits.shape == (17, 2)
    labels = [label for _, label in make_reviews(8, seed=5)]
    assert np.mean([id2label[i] == y for i, y in zip(logits.argmax(-1), labels)]) >= 0.9  # a good teacher

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was called again")

    monkeypatch.setattr(distillation, "compute_teacher_logits", no_teacher)
    again, sources = teacher_logits([str(teacher)], texts, id2label, accelerator)
    assert sources == {str(teacher): "cache"} and np.array_equal(again, logits)
    monkeypatch.undo()
    both, sources = teacher_logits([str(teacher), str(tiny_bert_classifier)], texts, id2label, accelerator)
    assert sources[str(tiny_bert_classifier)] == "computed"
    bert = distillation._load_cached(distillation.cache_file(str(tiny_bert_classifier), texts), 17)[:, [1, 0]]
    assert np.allclose(both, ensemble_logits([logits, bert]), atol=1e-6)


def test_a_bf16_run_labels_under_autocast_and_caches_apart_from_float32(teacher, tiny_bert_classifier):
    from accelerate.state import AcceleratorState

    from finetune.devices import cpu_has_native_bf16

    if not (cpu_has_native_bf16() or torch.cuda.is_available()):  # e.g. an AVX2-only CPU: refused in one line
        AcceleratorState._reset_state(reset_partial_state=True)
        try:
            with pytest.raises(ArgumentError, match="this CPU has no native bfloat16"):
                create_accelerator(mixed_precision="bf16")
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)
        return
    id2label = {0: "negative", 1: "positive"}
    texts = [text for text, _ in make_reviews(8, seed=7)]
    teachers = [str(teacher), str(tiny_bert_classifier)]
    full, sources = teacher_logits(teachers, texts, id2label, create_accelerator())
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        half, sources = teacher_logits(teachers, texts, id2label, create_accelerator(mixed_precision="bf16"))
        assert sources == {name: "computed" for name in teachers}  # not the float32 entries
        for name in teachers:
            path = distillation.cache_file(name, texts, precision="bf16")
            assert path.is_file() and path != distillation.cache_file(name, texts)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert not np.array_equal(half, full) and np.allclose(half, full, atol=0.1)  # bf16 products, close to float32
    assert (half.argmax(-1) == full.argmax(-1)).mean() >= 0.9


def test_a_tfidf_teacher_is_fitted_on_the_training_split_and_joins_an_ensemble(teacher, monkeypatch):
    from finetune.evaluation.baselines import TfidfLogisticRegression

    accelerator, id2label = create_accelerator(), {0: "negative", 1: "positive"}
    train, dev = make_reviews(30, seed=1), make_reviews(10, seed=2)
    fit_data = {name: {"texts": [text for text, _ in rows], "labels": [int(label == "positive") for _, label in rows]}
                for name, rows in (("train", train), ("validation", dev))}  # fmt: skip
    texts = [text for text, _ in make_reviews(8, seed=5)]
    logits, sources = teacher_logits(["tfidf_lr"], texts, id2label, accelerator, fit_data=fit_data)
    assert sources == {"tfidf_lr": "computed"} and logits.shape == (16, 2)
    train_part, dev_part = fit_data["train"], fit_data["validation"]
    fitted = TfidfLogisticRegression().fit(*train_part.values(), *dev_part.values())
    assert np.allclose(np.exp(logits), fitted.predict_proba(texts), atol=1e-6)  # log-probabilities, label order kept
    monkeypatch.setattr(distillation, "baseline_teacher_logits", pytest.fail)
    assert teacher_logits(["tfidf_lr"], texts, id2label, accelerator, fit_data=fit_data)[1] == {"tfidf_lr": "cache"}
    monkeypatch.undo()
    other = {**fit_data, "train": {**fit_data["train"], "labels": [1 - y for y in fit_data["train"]["labels"]]}}
    assert teacher_logits(["tfidf_lr"], texts, id2label, accelerator, fit_data=other)[1] == {"tfidf_lr": "computed"}
    both, _ = teacher_logits([str(teacher), "tfidf_lr"], texts, id2label, accelerator, fit_data=fit_data)
    alone, _ = teacher_logits([str(teacher)], texts, id2label, accelerator)
    assert np.allclose(both, ensemble_logits([alone, logits]), atol=1e-6)


def test_user_errors_are_one_line(
    teacher, reviews_csv, tiny_vectors, tiny_bert_classifier, tmp_path, capsys, monkeypatch
):
    from finetune.recipes.distill_bilstm_attention import main

    with pytest.raises(ArgumentError, match="--teacher_model_name_or_path .*nowhere: no such directory .*tfidf_lr"):
        parse_distill_args(["--teacher_model_name_or_path", str(tmp_path / "nowhere")])
    assert parse_distill_args(["--teacher_model_name_or_path", "tfidf_lr"])[0].distill.teacher_model_name_or_path
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tfidf_lr").mkdir()
    with pytest.raises(ArgumentError, match="tfidf_lr: both a baseline's name and a path here; give ./tfidf_lr"):
        parse_distill_args(["--teacher_model_name_or_path", "tfidf_lr"])
    with pytest.raises(ArgumentError, match="--distill_loss l1: must be mse or kl"):
        parse_distill_args(["--teacher_model_name_or_path", str(teacher), "--distill_loss", "l1"])
    wrong = tmp_path / "wrong-labels"
    wrong.mkdir()
    for file in tiny_bert_classifier.iterdir():
        (wrong / file.name).write_bytes(file.read_bytes())
    config = json.loads((wrong / "config.json").read_text())
    config.update(id2label={"0": "good", "1": "bad"}, label2id={"good": 0, "bad": 1})
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit) as exit_info:
        report_errors("distill_bilstm_attention.py")(main)(
            distill_args(reviews_csv, tiny_vectors, tmp_path / "o", wrong)
        )
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("distill_bilstm_attention.py: error: --teacher_model_name_or_path")
    assert "['bad', 'good'] are not the data's ['negative', 'positive']" in error[-1]


def test_distilled_student_in_one_process(teacher, reviews_csv, tiny_vectors, tmp_path, monkeypatch):
    from finetune.recipes.distill_bilstm_attention import main

    output_dir = tmp_path / "student"
    results = main(distill_args(reviews_csv, tiny_vectors, output_dir, teacher))
    assert results["test_accuracy"] >= 0.85  # chance: 0.5
    report = results["distillation"]
    assert report["transfer_set"]["labelled"] == 240 and report["transfer_set"]["augmented"] > 200
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert f"Distilled (Tang et al. 2019) from `{teacher}`" in card and "MSE between" in card
    assert "Adversarial training" not in card  # the distillation config's adversarial_epsilon is 0
    scores = run_pipeline(output_dir, ["这部电影很好。", "快递太差劲了。"])
    assert [max(s, key=lambda x: x["score"])["label"] for s in scores] == ["positive", "negative"]
    # A second run over the same transfer set reads the teacher's logits from the cache
    monkeypatch.setattr(distillation, "compute_teacher_logits", pytest.fail)
    one_epoch = ("--num_train_epochs", "1")
    again = main(distill_args(reviews_csv, tiny_vectors, tmp_path / "again", teacher, extra=one_epoch))
    assert again["distillation"]["teacher_logits"] == {str(teacher): "cache"}


def test_distilled_student_in_two_processes(teacher, reviews_csv, tiny_vectors, tmp_path):
    output_dir = tmp_path / "ddp"
    args = distill_args(
        reviews_csv, tiny_vectors, output_dir, teacher, extra=("--per_device_train_batch_size", "16", "--seed", "43")
    )
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--dynamo_backend", "no",
               "--mixed_precision", "no", "--num_processes", "2", "--multi_gpu",
               "--main_process_port", str(free_port()), str(DISTILL), *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = run_processes(command, tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI_CPU, 2 process(es)" in result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_num_examples"] == 30 and metrics["test_accuracy"] >= 0.85
    assert metrics["distillation"]["teacher_logits"] == {str(teacher): "computed"}
    # The processes' shares, gathered, are the teacher's logits in the texts' order (as one process computes them)
    run, _ = parse_distill_args(args)
    splits, _ = load_data(run.data, 43)
    texts, _, _ = transfer_texts(list(splits["train"]["text"]), list(splits["train"]["label"]), run.distill, "text", 43)
    cached = np.load(distillation.cache_file(str(teacher), texts))
    assert np.allclose(
        cached, distillation.compute_teacher_logits(str(teacher), texts, create_accelerator(), 64), atol=1e-5
    )
    assert math.isfinite(metrics["history"]["train"][-1]["loss"])
