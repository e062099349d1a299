"""`finetune train` runs the same recipe as `accelerate launch recipes/train_bilstm_attention.py`."""

import json

import pytest
from conftest import tiny_recipe_args

from finetune.cli import main as cli


def test_finetune_train_runs_the_recipe(reviews_csv, tiny_vectors, tmp_path):
    cli(["train", *tiny_recipe_args(reviews_csv, tiny_vectors, tmp_path, "--num_train_epochs", "1")])
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_num_examples"] == 30 and metrics["train_steps"] == 15
    assert (tmp_path / "model.safetensors").exists()


def test_weight_average_is_what_gets_saved(reviews_csv, tiny_vectors, tmp_path):
    from safetensors.torch import load_file

    cli(["train", *tiny_recipe_args(reviews_csv, tiny_vectors, tmp_path, "--ema_decay", "0.9")])
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_accuracy"] >= 0.9
    weights = load_file(tmp_path / "model.safetensors")
    assert not any(key.startswith("module.") or key == "n_averaged" for key in weights)


def test_predict_needs_something_to_label(trained_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["predict", str(trained_run)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "finetune: error: predict: give an input file or --text"


def test_bad_data_error_names_the_column(tiny_vectors, tmp_path, capsys):
    data = tmp_path / "bad.csv"
    data.write_text("review,label\n很好,pos\n很差,neg\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        cli(["train", *tiny_recipe_args(data, tiny_vectors, tmp_path / "out")])
    assert "bad.csv: no column 'text' (columns: review, label)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"bad.csv: no column 'text'"):  # --debug: the exception itself
        cli(["train", *tiny_recipe_args(data, tiny_vectors, tmp_path / "out"), "--debug"])
