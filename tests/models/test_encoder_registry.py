"""The encoder registry: a toy kind registered from test code alone (one class, one call) is built
by the normal builder path, trains, round-trips through `from_pretrained`, and drives the model
card, LoRA's defaults, freezing and `scripts/compare_runs.py`; every built-in encoder meets the
`Encoder` protocol."""

import copy
import json
import runpy

import pytest
import torch
import yaml
from conftest import ROOT
from torch import nn
from transformers import AutoModelForSequenceClassification, BertConfig

from finetune.config.arguments import RunArguments
from finetune.data.features import train_dataloader
from finetune.files import save_pretrained_into
from finetune.hub.push import model_card
from finetune.models.bilstm_attention import (
    ENCODER_KINDS,
    ENCODER_TYPES,
    BiLMConfig,
    BiLSTMAttentionConfig,
    BiLSTMAttentionForSequenceClassification,
    Encoder,
    register_encoder,
    unregister_encoder,
)
from finetune.models.bilstm_attention.encoders import PRETRAINED_FROM
from finetune.training.builders import BUILDERS, build_word_vector_model
from finetune.training.freezing import FreezingPolicy, apply_freezing, layer_learning_rates
from finetune.training.lora import LoraOptions, apply_lora, default_target_modules
from finetune.training.optimization import create_optimizer

BUILT_IN = ("word_vectors", "transformer", "bilm")
TOY = "bag_of_words"
TEXTS = ["这部电影很好。", "酒店太差劲了！", "还行吧"]


class BagOfWordsEncoder(nn.Module):
    """The toy kind: word vectors through one tanh layer, no order at all (the BiLSTM adds that)."""

    description = "a bag-of-words toy encoder"
    pretrained_from = "word_vectors"

    def __init__(self, config: BiLSTMAttentionConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.projection = nn.Linear(config.embedding_dim, 12)
        self.output_dim = 12

    def layer_groups(self) -> list[list[nn.Module]]:
        return [[self.embeddings], [self.projection]]

    def default_lora_target_modules(self) -> list[str]:
        return ["projection"]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.projection(self.embeddings(input_ids)))


@pytest.fixture(scope="module")
def toy(review_splits, tiny_vectors):
    """The toy kind registered (and unregistered after the module), built by its registered builder."""
    register_encoder(TOY, BagOfWordsEncoder, builder=build_word_vector_model)
    try:
        args = RunArguments.of(
            encoder_type=TOY, word_vectors=str(tiny_vectors), min_freq=1, lstm_hidden_size=8, attention_dim=8,
            max_seq_length=32, seed=0,
        )  # fmt: skip
        torch.manual_seed(0)
        yield BUILDERS[TOY](review_splits, {0: "negative", 1: "positive"}, args)
    finally:
        unregister_encoder(TOY)
    assert tuple(ENCODER_TYPES) == BUILT_IN and TOY not in BUILDERS
    with pytest.raises(ValueError, match=r"encoder_type must be one of \('word_vectors', 'transformer', 'bilm'\)"):
        BiLSTMAttentionConfig(encoder_type=TOY)


@pytest.fixture(scope="module")
def toy_run(toy, tiny_vectors, tmp_path_factory):
    """A run directory as the recipe leaves it: the model, config.yaml, metrics.json."""
    run_dir = tmp_path_factory.mktemp("toy-run")
    save_pretrained_into(toy.model, toy.tokenizer, run_dir)
    run = {"encoder_type": TOY, "word_vectors": str(tiny_vectors), "segmenter": "rjieba", "max_length": 32}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(run), encoding="utf-8")
    metrics = {
        **toy.report,
        "test_accuracy": 0.9,
        "test_macro_f1": 0.89,
        "train_samples_per_second": 120.0,
        "train_runtime_s": 6.0,
        "train_steps": 5,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return run_dir


def inputs_of(tokenizer, texts):
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    inputs.pop("token_type_ids", None)
    return inputs


def test_the_toy_kind_is_built_by_its_registered_builder(toy, tiny_vectors):
    model = toy.model
    assert model.config.encoder_type == TOY
    assert type(model.encoder) is BagOfWordsEncoder and isinstance(model.encoder, Encoder)
    assert model.get_input_embeddings() is model.encoder.embeddings
    # The word-vector builder copied the pretrained vectors into the toy's table.
    lines = tiny_vectors.read_text(encoding="utf-8").splitlines()[1:]
    vectors = {word: [float(v) for v in values] for word, *values in (line.split() for line in lines)}
    row = toy.tokenizer.convert_tokens_to_ids("电影")
    torch.testing.assert_close(model.encoder.embeddings.weight[row].detach(), torch.tensor(vectors["电影"]))


def test_the_toy_kind_trains(toy):
    model = copy.deepcopy(toy.model).train()
    batch = next(iter(train_dataloader(toy.splits["train"], toy.tokenizer, batch_size=16, seed=0)))
    optimizer = create_optimizer(model, learning_rate=0.01, weight_decay=0.0)
    before = model.encoder.projection.weight.detach().clone()
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert not torch.equal(model.encoder.projection.weight, before)


def test_the_toy_model_round_trips_in_process(toy, toy_run):
    saved = json.loads((toy_run / "config.json").read_text(encoding="utf-8"))
    assert saved["encoder_type"] == TOY
    loaded = AutoModelForSequenceClassification.from_pretrained(toy_run).eval()
    assert type(loaded) is BiLSTMAttentionForSequenceClassification and type(loaded.encoder) is BagOfWordsEncoder
    inputs = inputs_of(toy.tokenizer, TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, toy.model.eval()(**inputs).logits, rtol=0, atol=0)


def test_the_model_card_describes_the_toy_kind(toy_run, tiny_vectors):
    card = str(model_card(toy_run))
    assert f"- Encoder: a bag-of-words toy encoder: {tiny_vectors} (8-dimensional;" in card
    assert "segmented with rjieba" in card and "- bag-of-words\n" in card  # its tag
    assert "ELMo" not in card and "a transformer encoder" not in card and "base_model:" not in card


def test_compare_runs_reads_the_toy_kind(toy_run):
    compare_runs = runpy.run_path(str(ROOT / "scripts" / "compare_runs.py"))
    row = compare_runs["describe"](toy_run)
    assert row[1:6] == [TOY, "word2vec (cached)", "fine-tuned", "0.9000", "0.8900"]


def test_lora_defaults_come_from_the_toy_kind(toy, tmp_path):
    model = copy.deepcopy(toy.model)
    assert default_target_modules(model) == ["projection"]
    peft_model = apply_lora(model, LoraOptions(2), base_path=tmp_path)  # rank 2
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert any("encoder.projection.lora_A" in name for name in trainable)
    assert not any("embeddings" in name for name in trainable)


def test_freezing_and_layer_rates_go_through_the_toy_layer_groups(toy):
    model = copy.deepcopy(toy.model)
    encoder = model.encoder
    apply_freezing(encoder, FreezingPolicy(freeze_bottom_layers=1))
    assert not encoder.embeddings.weight.requires_grad and encoder.projection.weight.requires_grad
    gradual = FreezingPolicy(gradual_unfreezing_epochs=1)
    apply_freezing(encoder, gradual, epoch=0)
    assert not any(p.requires_grad for p in encoder.parameters())
    apply_freezing(encoder, gradual, epoch=1)
    assert encoder.projection.weight.requires_grad and not encoder.embeddings.weight.requires_grad
    rates = layer_learning_rates(model, 1.0, head_learning_rate=None, layer_decay=0.5)
    assert [rate for _, rate in rates] == [1.0, 0.5, 1.0]  # projection, embeddings, head
    assert rates[0][0] == list(encoder.projection.parameters()) and rates[1][0] == [encoder.embeddings.weight]


def tiny_config(encoder_type: str) -> BiLSTMAttentionConfig:
    encoder_configs = {
        "transformer": BertConfig(
            vocab_size=20, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
        ).to_dict(),
        "bilm": BiLMConfig(vocab_size=20, projection_size=8, hidden_size=16, num_layers=2).to_dict(),
    }
    return BiLSTMAttentionConfig(
        encoder_type=encoder_type,
        encoder_config=encoder_configs.get(encoder_type),
        vocab_size=20,
        embedding_dim=8,
        char_vocab_size=5,
        lstm_hidden_size=8,
        attention_dim=8,
    )


@pytest.mark.parametrize("encoder_type", tuple(ENCODER_TYPES))
def test_every_registered_encoder_meets_the_protocol(encoder_type):
    kind = ENCODER_KINDS[encoder_type]
    assert kind.description and kind.pretrained_from in PRETRAINED_FROM
    assert callable(BUILDERS[encoder_type])  # the builder named lazily can be imported
    model = BiLSTMAttentionForSequenceClassification(tiny_config(encoder_type)).eval()
    encoder = model.encoder
    assert isinstance(encoder, Encoder) and type(encoder) is kind.encoder_class

    input_ids = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    with torch.no_grad():
        states = encoder(input_ids, input_ids.ne(0))
    assert states.shape == (2, 4, encoder.output_dim)
    groups = encoder.layer_groups()
    bottom = {id(p) for module in groups[0] for p in module.parameters()}
    assert all(id(p) in bottom for p in encoder.embeddings.parameters())  # layer 0: the embedding layer
    submodules = set(encoder.modules())
    assert all(module in submodules for group in groups for module in group)
    names = {name.rsplit(".", 1)[-1] for name, _ in encoder.named_modules()}
    targets = encoder.default_lora_target_modules()
    assert targets is None or set(targets) <= names


def test_registration_refuses_a_taken_name_and_a_class_that_is_no_encoder():
    with pytest.raises(ValueError, match="encoder kind 'bilm' is registered already"):
        register_encoder("bilm", BagOfWordsEncoder, builder=build_word_vector_model)

    class NoLayers(nn.Module):
        description = "an encoder without layers"
        pretrained_from = None

    with pytest.raises(TypeError, match="NoLayers is no Encoder: it lacks layer_groups, default_lora_target_modules"):
        register_encoder("no_layers", NoLayers, builder=build_word_vector_model)
    assert "no_layers" not in ENCODER_TYPES and ENCODER_KINDS["bilm"].encoder_class.__name__ == "BiLMEncoder"
