"""Freezing policies on real encoders: which layers train, when, at what rate; frozen weights stay put."""

import json
import sys

import pytest
import torch
from conftest import BERT_CONFIG, ROOT, encoder_recipe_args, free_port, run_processes
from safetensors.torch import load_file

from finetune.models.bilstm_attention import (
    BiLMForLanguageModeling,
    BiLSTMAttentionConfig,
    BiLSTMAttentionForSequenceClassification,
)
from finetune.recipes.train_bilstm_attention import main
from finetune.training.freezing import FreezingPolicy, apply_freezing, layer_learning_rates
from finetune.training.optimization import create_optimizer


def bert_classifier(tiny_bert):
    from transformers import AutoConfig

    config = BiLSTMAttentionConfig(
        encoder_type="transformer",
        encoder_config=AutoConfig.from_pretrained(tiny_bert).to_dict(),
        lstm_hidden_size=8,
        attention_dim=8,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    return BiLSTMAttentionForSequenceClassification(config)


def trainable_layers(model) -> list[bool]:
    return [all(p.requires_grad for m in group for p in m.parameters()) for group in model.encoder.layer_groups()]


def test_layer_groups_are_embeddings_then_blocks(tiny_bert, tiny_bilm):
    model = bert_classifier(tiny_bert)
    groups = model.encoder.layer_groups()
    assert len(groups) == 3  # embeddings + 2 blocks
    assert groups[0][0] is model.encoder.model.embeddings
    assert groups[2][0] is model.encoder.model.encoder.layer[1]
    bilm = BiLMForLanguageModeling.from_pretrained(tiny_bilm).bilm
    assert len(bilm.layer_groups()) == 3 and bilm.layer_groups()[0] == [bilm.embeddings]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (FreezingPolicy(), [True, True, True]),
        (FreezingPolicy(freeze_embeddings=True), [False, True, True]),
        (FreezingPolicy(freeze_bottom_layers=2), [False, False, True]),
        (FreezingPolicy(freeze_encoder=True), [False, False, False]),
    ],
)
def test_freezing_policies(tiny_bert, policy, expected):
    model = bert_classifier(tiny_bert)
    apply_freezing(model.encoder, policy)
    assert trainable_layers(model) == expected
    head = [model.head, model.classifier]
    assert all(p.requires_grad for module in head for p in module.parameters())


def test_gradual_unfreezing_goes_top_down_every_k_epochs(tiny_bert):
    model = bert_classifier(tiny_bert)
    policy = FreezingPolicy(gradual_unfreezing_epochs=2)
    schedule = []
    for epoch in range(8):
        apply_freezing(model.encoder, policy, epoch)
        schedule.append(trainable_layers(model))
    assert schedule == [
        [False, False, False],
        [False, False, False],
        [False, False, True],
        [False, False, True],
        [False, True, True],
        [False, True, True],
        [True, True, True],
        [True, True, True],
    ]
    # layers frozen for good stay frozen
    apply_freezing(model.encoder, FreezingPolicy(freeze_embeddings=True, gradual_unfreezing_epochs=1), 5)
    assert trainable_layers(model) == [False, True, True]


def test_layer_wise_learning_rates(tiny_bert):
    model = bert_classifier(tiny_bert)
    rates = layer_learning_rates(model, 1e-4, head_learning_rate=1e-2, layer_decay=0.5)
    by_layer = [rate for _, rate in rates]
    assert by_layer == [1e-4, 5e-5, 2.5e-5, 1e-2]  # top block, block 1, embeddings, head
    listed = [id(p) for params, _ in rates for p in params]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())  # each parameter once
    optimizer = create_optimizer(model, 1e-4, 0.01, head_learning_rate=1e-2, layer_decay=0.5)
    classifier = {id(model.classifier.weight)}
    assert [g["lr"] for g in optimizer.param_groups if classifier & {id(p) for p in g["params"]}] == [1e-2]


def encoder_weights(path, prefix):
    return {k[len(prefix) :]: v for k, v in load_file(path).items() if k.startswith(prefix)}


@pytest.mark.parametrize(
    ("flags", "frozen_prefixes"),
    [
        (["--freeze_encoder", "true"], ("embeddings.", "encoder.layer.0.", "encoder.layer.1.")),
        (["--freeze_bottom_layers", "2"], ("embeddings.", "encoder.layer.0.")),
    ],
)
def test_frozen_weights_are_bit_identical_after_training(flags, frozen_prefixes, tiny_bert, reviews_csv, tmp_path):
    output_dir = tmp_path / "run"
    args = encoder_recipe_args(BERT_CONFIG, reviews_csv, tiny_bert, output_dir, "--learning_rate", "0.01", *flags)
    main([*args, "--num_train_epochs", "1"])
    before = load_file(tiny_bert / "model.safetensors")
    after = encoder_weights(output_dir / "model.safetensors", "encoder.model.")
    assert after
    for name, weight in after.items():
        original = before.get(name, before.get("bert." + name))
        if name.startswith(frozen_prefixes):
            assert torch.equal(weight, original), name
        else:
            assert not torch.equal(weight, original), f"{name} should have trained"


def test_two_processes_with_gradual_unfreezing(tiny_bert, reviews_csv, tmp_path):
    """Frozen and late-unfrozen layers under DDP: no unused-parameter error, weights in sync at the end."""
    output_dir = tmp_path / "ddp"
    args = encoder_recipe_args(
        BERT_CONFIG, reviews_csv, tiny_bert, output_dir, "--num_train_epochs", "3",
        "--gradual_unfreezing_epochs", "1", "--freeze_embeddings", "true", "--learning_rate", "0.01",
    )  # fmt: skip
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "--num_processes", "2", "--multi_gpu",
               "--main_process_port", str(free_port()),
               str(ROOT / "recipes" / "train_bilstm_attention.py"), *args]  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = run_processes(command, tmp_path, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MULTI_CPU, 2 process(es)" in result.stderr
    assert "epoch 1: top 1 of 3 encoder layers train" in result.stderr
    assert "epoch 2: top 2 of 3 encoder layers train" in result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["test_num_examples"] == 30
    before = load_file(tiny_bert / "model.safetensors")
    after = encoder_weights(output_dir / "model.safetensors", "encoder.model.")
    assert torch.equal(after["embeddings.word_embeddings.weight"], before["bert.embeddings.word_embeddings.weight"])
