"""The encoder interface and the one registry of encoder kinds.

An encoder turns token ids into token states for the BiLSTM + attention head. Every kind meets
`Encoder` (a `typing.Protocol`: nothing to inherit) and is registered here under its name, the
config's `encoder_type`, with the builder that makes its tokenizer and initial weights. That one
registration drives:

- the config's check of `encoder_type` (and, for `pretrained_from="checkpoint"`, of `encoder_config`);
- the encoder `BiLSTMAttentionForSequenceClassification` builds (`build_encoder`);
- the builder the recipe calls, `finetune.training.builders.BUILDERS[encoder_type]` (imported on first use);
- the model card's sentence about the encoder (`finetune.hub.model_card`: `description`, `pretrained_from`);
- LoRA's default target modules (`finetune.training.lora`: `default_lora_target_modules()`);
- the pretraining column of `scripts/compare_runs.py` (`pretrained_from`);
- the choices of `--encoder_type` (`ENCODER_TYPES`).

This file travels to the Hub as custom code with the model: it imports only torch and its sibling
files. A kind registered at run time, outside this file, works in that process (also through
`from_pretrained`); a model saved with it loads elsewhere only where the same kind is registered,
since the code on the Hub knows the kinds registered here.

Adding an encoder kind
----------------------
1. Write the encoder: an `nn.Module` built as `YourEncoder(config)` from the
   `BiLSTMAttentionConfig` alone (`from_pretrained` loads the weights afterwards), with the
   members of `Encoder` below. For a kind that travels to the Hub, one module in this folder,
   `encoder_<kind>.py`, importing only torch, transformers and its sibling files.
2. Register it with its builder, one line. A built-in kind: at the bottom of this file,

       register_encoder("char_cnn", CharCNNEncoder, builder="finetune.training.builders:build_char_cnn_model")

   (the builder by name: this file cannot import `finetune.training.builders`, which needs datasets and
   gensim); a plugin or a test calls `register_encoder` with the builder itself.

A builder is `builder(splits, id2label, args: finetune.config.arguments.RunArguments)
-> finetune.training.builders.Built`.
A kind over words with `pretrained_from="word_vectors"` and `embeddings` an
`nn.Embedding(config.vocab_size, config.embedding_dim)` can reuse `build_word_vector_model`
(JiebaTokenizer vocabulary from the training split, pretrained vectors copied into `embeddings`);
a kind built from a pretrained checkpoint writes its own, as `build_transformer_model` does.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from .encoder_bilm import BiLMEncoder
from .encoder_transformer import TransformerEncoder
from .encoder_word_vectors import WordVectorEncoder

PRETRAINED_FROM = ("checkpoint", "word_vectors", None)


@runtime_checkable
class Encoder(Protocol):
    """What the model, freezing, layer-wise learning rates, LoRA and the model card ask of an encoder.

    Built as `encoder_class(config)` from a `BiLSTMAttentionConfig`. `description` and
    `pretrained_from` are facts about the kind (class attributes); the rest belong to the instance.
    """

    description: ClassVar[str]
    """The kind in a few words, as the model card says it: "a transformer encoder"."""

    pretrained_from: ClassVar[str | None]
    """Where the initial weights come from. `"checkpoint"`: a pretrained model (`encoder_name_or_path`,
    a Hub id or a directory) whose own config `config.encoder_config` holds and `__init__` rebuilds;
    the card names it as the base model. `"word_vectors"`: a word-vector file (or word2vec trained
    here) copied into `embeddings`, over a JiebaTokenizer's words. `None`: trained from scratch."""

    embeddings: nn.Module
    """The input embedding module: `get_input_embeddings()`, adversarial training, freezing's layer 0."""

    output_dim: int
    """Width of the token states `forward` returns (the BiLSTM's input size)."""

    def layer_groups(self) -> list[list[nn.Module]]:
        """The encoder's layers bottom-up, one list of modules per layer; group 0, the embedding layer,
        holds `embeddings` (or a module around it, as BERT's `embeddings` around `word_embeddings`).

        Freezing counts layers in these groups (`freeze_bottom_layers`, gradual unfreezing);
        layer-wise learning-rate decay gives each group its rate, `embedding_learning_rate` goes to
        group 0. Parameters in no group (e.g. a scalar mix of layers) train with the head.
        """
        ...

    def default_lora_target_modules(self) -> list[str] | None:
        """Names of the encoder's Linear/Embedding modules LoRA wraps when none are given; None:
        peft's default for the model type of the checkpoint (`config.encoder_config["model_type"]`)."""
        ...

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, time) token ids and boolean mask -> (batch, time, output_dim) token states."""
        ...


ENCODER_MEMBERS = (
    "description",
    "pretrained_from",
    "embeddings",
    "output_dim",
    "layer_groups",
    "default_lora_target_modules",
    "forward",
)
INSTANCE_MEMBERS = ("embeddings", "output_dim")  # set by `__init__`: a class need not have them


def missing_members(encoder: object) -> list[str]:
    """The members of `Encoder` that `encoder`, an instance or a class, lacks (empty: it is one)."""
    is_class = isinstance(encoder, type)
    return [m for m in ENCODER_MEMBERS if not (is_class and m in INSTANCE_MEMBERS) and not hasattr(encoder, m)]


@dataclass(frozen=True)
class EncoderKind:
    """One registered kind: its name (the config's `encoder_type`), encoder class and builder."""

    name: str
    encoder_class: type[nn.Module]
    builder: str | Callable
    """The builder of tokenizer and model, or its `"module:function"` name (imported on first use)."""

    @property
    def description(self) -> str:
        return self.encoder_class.description

    @property
    def pretrained_from(self) -> str | None:
        return self.encoder_class.pretrained_from


ENCODER_KINDS: dict[str, EncoderKind] = {}
# The registered names, live: a kind registered later is in it too. `encoder_type in ENCODER_TYPES`,
# `", ".join(ENCODER_TYPES)`; `tuple(ENCODER_TYPES)` for a snapshot.
ENCODER_TYPES = ENCODER_KINDS.keys()


def register_encoder(
    name: str, encoder_class: type[nn.Module], *, builder: str | Callable, exist_ok: bool = False
) -> EncoderKind:
    """Registers an encoder kind: `BiLSTMAttentionConfig(encoder_type=name)` then builds `encoder_class`.

    Args:
        name: The kind's name, as `encoder_type` in the config, the YAML and `--encoder_type`.
        encoder_class: An `nn.Module` meeting `Encoder`, built as `encoder_class(config)`.
        builder: `builder(splits, id2label, model_args, data_args, seed) -> Built`, or its
            `"module:function"` name.
        exist_ok: Replace a kind registered under `name` (else that is an error).

    Raises:
        ValueError: `name` is taken, or `pretrained_from` is not one of `PRETRAINED_FROM`.
        TypeError: `encoder_class` lacks members of `Encoder`.
    """
    missing = missing_members(encoder_class)
    if missing:
        raise TypeError(f"{encoder_class.__name__} is no Encoder: it lacks {', '.join(missing)}")
    if encoder_class.pretrained_from not in PRETRAINED_FROM:
        raise ValueError(
            f"{encoder_class.__name__}.pretrained_from must be one of {PRETRAINED_FROM}, "
            f"got {encoder_class.pretrained_from!r}"
        )
    if name in ENCODER_KINDS and not exist_ok:
        raise ValueError(f"encoder kind {name!r} is registered already ({ENCODER_KINDS[name].encoder_class.__name__})")
    kind = EncoderKind(name, encoder_class, builder)
    ENCODER_KINDS[name] = kind
    return kind


def unregister_encoder(name: str) -> None:
    """Removes a kind registered with `register_encoder` (a plugin's or a test's)."""
    del ENCODER_KINDS[encoder_kind(name).name]


def encoder_kind(name: str) -> EncoderKind:
    """The kind registered as `name`.

    Raises:
        ValueError: No kind has that name; the message lists those registered.
    """
    if name not in ENCODER_KINDS:
        raise ValueError(f"encoder_type must be one of {tuple(ENCODER_TYPES)}, got {name!r}")
    return ENCODER_KINDS[name]


register_encoder("word_vectors", WordVectorEncoder, builder="finetune.training.builders:build_word_vector_model")
register_encoder("transformer", TransformerEncoder, builder="finetune.training.builders:build_transformer_model")
register_encoder("bilm", BiLMEncoder, builder="finetune.training.builders:build_bilm_model")
