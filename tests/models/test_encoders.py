"""The transformer and biLM encoders under the head, through the real recipe: train, save, reload
in a new process with the pretrained checkpoint gone, `pipeline()`; frozen weights stay put."""

import json
import shutil

import pytest
from conftest import BERT_CONFIG, BILM_CONFIG, encoder_recipe_args, in_process_scores, run_pipeline

from finetune.recipes.train_bilstm_attention import main

TEXTS = ["这部电影很好。", "酒店太差劲了！", "", "很" * 500]

ENCODERS = {
    "transformer": (BERT_CONFIG, "tiny_bert", ["--learning_rate", "0.002", "--head_learning_rate", "0.01"]),
    "bilm": (BILM_CONFIG, "tiny_bilm", ["--learning_rate", "0.01", "--head_learning_rate", "0.01"]),
}


@pytest.mark.parametrize("encoder_type", sorted(ENCODERS))
def test_encoder_trains_and_round_trips_without_its_checkpoint(encoder_type, reviews_csv, tmp_path, request):
    config, fixture, extra = ENCODERS[encoder_type]
    encoder = shutil.copytree(request.getfixturevalue(fixture), tmp_path / "encoder")
    output_dir = tmp_path / "run"
    args = encoder_recipe_args(config, reviews_csv, encoder, output_dir, "--num_train_epochs", "4", *extra)
    results = main([*args, "--freeze_encoder", "false"])
    assert results["test_accuracy"] >= 0.8, results["test_accuracy"]
    assert results["encoder"]["type"] == encoder_type
    saved = json.loads((output_dir / "config.json").read_text(encoding="utf-8"))
    assert saved["encoder_type"] == encoder_type and saved["encoder_config"]
    shutil.rmtree(encoder)  # reloading must need neither the checkpoint nor the network

    predictions = run_pipeline(output_dir, TEXTS)
    expected = in_process_scores(output_dir, TEXTS)
    assert len(predictions) == len(TEXTS)
    for got, want in zip(predictions, expected, strict=True):
        assert {row["label"]: pytest.approx(row["score"], abs=1e-4) for row in got} == want
