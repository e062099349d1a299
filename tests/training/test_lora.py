"""LoRA through the real recipe: the encoder gets an adapter, the head trains in full and is saved
with it; the adapter, the merged model and `pipeline()` on either give the same predictions."""

import json
import shutil

import pytest
import torch
from conftest import BERT_CONFIG, BILM_CONFIG, encoder_recipe_args, in_process_scores, run_pipeline
from safetensors.torch import load_file

from finetune.recipes.train_bilstm_attention import main
from finetune.training.lora import LoraOptions, apply_lora

TEXTS = ["这部电影很好。", "酒店太差劲了！", "", "很" * 500]


@pytest.fixture(scope="module")
def lora_run(reviews_csv, tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    encoder = shutil.copytree(tiny_bert, tmp / "encoder")
    output_dir = tmp / "run"
    args = encoder_recipe_args(BERT_CONFIG, reviews_csv, encoder, output_dir, "--num_train_epochs", "6")
    lora = ["--lora_r", "4", "--lora_alpha", "8", "--lora_merge", "true", "--head_learning_rate", "0.01"]
    results = main([*args, *lora, "--learning_rate", "0.01"])
    return output_dir, results


def test_lora_run_learns_and_saves_adapter_base_and_merged(lora_run):
    output_dir, results = lora_run
    assert results["test_accuracy"] >= 0.8, results["test_accuracy"]
    adapter = json.loads((output_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["r"] == 4 and adapter["lora_alpha"] == 8 and adapter["task_type"] == "SEQ_CLS"
    assert adapter["base_model_name_or_path"] == str((output_dir / "base").resolve())
    assert set(adapter["modules_to_save"]) >= {"head", "classifier"}
    assert (output_dir / "merged" / "model.safetensors").exists()
    assert not (output_dir / "merged" / "adapter_config.json").exists()
    sizes = results["lora"]
    assert sizes["adapter_bytes"] == (output_dir / "adapter_model.safetensors").stat().st_size
    assert sizes["adapter_bytes"] < sizes["full_model_bytes"]


def test_adapter_holds_lora_matrices_and_the_trained_head_not_the_encoder(lora_run):
    output_dir, _ = lora_run
    adapter = load_file(output_dir / "adapter_model.safetensors")
    base = load_file(output_dir / "base" / "model.safetensors")
    lora_keys = [k for k in adapter if "lora_" in k]
    assert lora_keys and all(any(m in k for m in ("query", "key", "value")) for k in lora_keys)
    assert not any(k.startswith("base_model.model.encoder.model.") and "lora_" not in k for k in adapter)
    # The head is saved trained: its weights differ from the freshly initialised ones in base/.
    head_key = next(k for k in adapter if k.endswith("classifier.weight"))
    assert not torch.equal(adapter[head_key], base["classifier.weight"])


def test_adapter_and_merged_model_give_the_same_predictions(lora_run):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    output_dir, _ = lora_run
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    inputs = tokenizer(["这部电影很好。", "酒店太差劲了！", "还行吧"], padding=True, return_tensors="pt")
    inputs.pop("token_type_ids", None)
    models = {
        "peft": AutoPeftModelForSequenceClassification.from_pretrained(output_dir),
        "transformers": AutoModelForSequenceClassification.from_pretrained(output_dir),
        "merged": AutoModelForSequenceClassification.from_pretrained(output_dir / "merged"),
    }
    with torch.no_grad():
        logits = {name: model.eval()(**inputs).logits for name, model in models.items()}
    torch.testing.assert_close(logits["peft"], logits["transformers"], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits["peft"], logits["merged"], rtol=0, atol=1e-5)


def test_pipeline_on_adapter_and_on_merged_model_in_new_processes(lora_run):
    output_dir, _ = lora_run
    expected = in_process_scores(output_dir / "merged", TEXTS)
    for directory in (output_dir, output_dir / "merged"):  # the adapter in the run directory itself, as a Trainer's
        predictions = run_pipeline(directory, TEXTS)
        for got, want in zip(predictions, expected, strict=True):
            assert {row["label"]: pytest.approx(row["score"], abs=1e-4) for row in got} == want


def test_lora_on_a_bilm_wraps_its_embeddings_and_refuses_lstm_targets(reviews_csv, tiny_bilm, tmp_path):
    from transformers import AutoModelForSequenceClassification

    args = encoder_recipe_args(BILM_CONFIG, reviews_csv, tiny_bilm, tmp_path / "run", "--max_steps", "3")
    results = main([*args, "--freeze_encoder", "false", "--lora_r", "2"])
    assert results["lora"]["adapter_bytes"] < results["lora"]["full_model_bytes"]
    adapter = load_file(tmp_path / "run" / "adapter_model.safetensors")
    assert any("bilm.embeddings.lora_embedding_A" in k for k in adapter)

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "base")
    with pytest.raises(ValueError, match="holds an nn.LSTM, which peft cannot wrap"):
        apply_lora(model, LoraOptions(lora_r=2, lora_target_modules=["layers"]), base_path=tmp_path / "run" / "base")
    with pytest.raises(ValueError, match="no encoder module named 'query'"):
        apply_lora(model, LoraOptions(lora_r=2, lora_target_modules=["query"]), base_path=tmp_path / "run" / "base")


def test_lora_with_freezing_options_is_refused(reviews_csv, tiny_bert, tmp_path):
    args = encoder_recipe_args(BERT_CONFIG, reviews_csv, tiny_bert, tmp_path / "run", "--max_steps", "1")
    with pytest.raises(ValueError, match="LoRA freezes the encoder itself"):
        main([*args, "--lora_r", "2", "--freeze_bottom_layers", "1"])


def test_yaml_lora_section_becomes_flags(tmp_path):
    from finetune.config.parsing import parse_run_args

    config = tmp_path / "lora.yaml"
    config.write_text(
        BERT_CONFIG.read_text(encoding="utf-8") + "\nlora:\n  r: 8\n  alpha: 32\n  target_modules: [query, value]\n",
        encoding="utf-8",
    )
    args, _ = parse_run_args(["--config", str(config), "--lora_alpha", "16"])
    assert (args.lora.lora_r, args.lora.lora_alpha, args.lora.lora_target_modules) == (8, 16, ["query", "value"])
