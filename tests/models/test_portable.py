"""A saved model carries its own code: `pipeline(..., trust_remote_code=True)` in an interpreter
that cannot import `finetune` predicts what `finetune` itself predicts, for every encoder kind."""

import json
import os

import pytest
from conftest import BERT_CONFIG, BILM_CONFIG, WITHOUT_FINETUNE, encoder_recipe_args, in_process_scores, run_pipeline

from finetune.recipes.train_bilstm_attention import main

TEXTS = ["这部电影很好。", "酒店太差劲了！", "", "很" * 500]


def pipeline_without_finetune(model_dir, texts):
    # cwd: not the repository, so nothing can be imported from the working directory.
    return run_pipeline(model_dir, texts, WITHOUT_FINETUNE, env=dict(os.environ), cwd=model_dir)


@pytest.fixture(scope="module")
def encoder_runs(reviews_csv, tiny_bert, tiny_e5, tiny_bilm, tmp_path_factory):
    runs = {}
    encoders = [("transformer", BERT_CONFIG, tiny_bert), ("sentencepiece", BERT_CONFIG, tiny_e5),
                ("bilm", BILM_CONFIG, tiny_bilm)]  # fmt: skip
    for name, config, encoder in encoders:
        output_dir = tmp_path_factory.mktemp(name)
        main(encoder_recipe_args(config, reviews_csv, encoder, output_dir, "--max_steps", "6"))
        runs[name] = output_dir
    return runs


@pytest.mark.parametrize("encoder_type", ["word_vectors", "transformer", "sentencepiece", "bilm"])
def test_pipeline_without_finetune_installed_matches(encoder_type, trained_run, encoder_runs):
    model_dir = trained_run if encoder_type == "word_vectors" else encoder_runs[encoder_type]
    saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    kind = "transformer" if encoder_type == "sentencepiece" else encoder_type
    assert saved["encoder_type"] == kind and "AutoModelForSequenceClassification" in saved["auto_map"]

    result = pipeline_without_finetune(model_dir, TEXTS)
    assert not any(module.startswith("finetune") for module in result["modules"]), result["modules"]
    assert any(module.startswith("transformers_modules") for module in result["modules"]), result["modules"]
    expected = in_process_scores(model_dir, TEXTS)  # with finetune
    for got, want in zip(result["scores"], expected, strict=True):
        assert {row["label"]: pytest.approx(row["score"], abs=1e-5) for row in got} == want
