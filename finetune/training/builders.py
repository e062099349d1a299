"""Build the tokenizer and the model for an encoder kind, from the training split.

The recipe calls one builder, `BUILDERS[encoder_type]`: the one registered with the encoder kind
(`register_encoder` in `finetune/models/bilstm_attention/encoders.py`, where the built-in kinds name
the builders below). Everything an encoder kind needs (vocabulary, pretrained vectors, their
coverage) is decided here, so the recipe reads the same whatever the encoder.
"""

import importlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from datasets import DatasetDict, List
from transformers import AutoModel, AutoTokenizer

from finetune.config.arguments import HeadArguments, RunArguments, WordVectorArguments
from finetune.data.corpora import unlabelled_sentences
from finetune.data.features import (
    count_words,
    encode_splits,
    encode_texts,
    long_text_config,
    long_text_settings,
    prepare_tokenizer,
    segment_splits,
)
from finetune.data.multilabel import MULTI_LABEL
from finetune.data.normalization import normalization_map, normalize_fast_tokenizer
from finetune.data.tables import read_text_lines
from finetune.errors import ArgumentError
from finetune.model_files import hub_errors
from finetune.models.bilstm_attention import (
    ENCODER_KINDS,
    BiLMForLanguageModeling,
    BiLSTMAttentionConfig,
    BiLSTMAttentionForSequenceClassification,
    JiebaTokenizer,
    encoder_kind,
)
from finetune.training.vocabulary_trim import trim_vocabulary
from finetune.vectors.embeddings import build_embedding_matrix, coverage_warnings, format_coverage
from finetune.vectors.reading import read_word_vectors
from finetune.vectors.vocabulary import SPECIAL_TOKENS, build_vocabulary, token_characters
from finetune.vectors.word2vec import train_word_vectors

logger = logging.getLogger(__name__)

# Dimension of word2vec trained here when --vector_size is not given: that of Tencent's vectors
# and of the demo config's tuned runs.
DEFAULT_VECTOR_SIZE = 200


@dataclass
class Built:
    """What a builder hands the recipe."""

    model: torch.nn.Module
    tokenizer: object
    splits: DatasetDict  # encoded: input_ids, attention_mask, length, label
    # e.g. vector coverage, and `warnings` (strings), for metrics.json and the model card
    report: dict = field(default_factory=dict)


def default_vectors_path(train_words, segmenter: JiebaTokenizer, vector_args: WordVectorArguments, seed: int):
    """word2vec trained on the training split (plus the embedded unlabelled corpus); cached by content.
    With `--combine_vectors continue/concat`, combined with the `--word_vectors` file (`finetune.vectors.combination`).

    The corpus is segmented by `segmenter`, the one that segmented the training texts (same
    segmenter, user dictionary and lowercasing), so both give the same words.
    """
    sentences = list(train_words)
    if vector_args.pretrain_corpus:
        sentences += [segmenter.segment(text) for text in unlabelled_sentences()]
    if vector_args.vector_characters:
        # The same text once more as characters: characters get vectors in the words' space, for
        # the unknown words that the tokenizer reads as characters.
        sentences += [list("".join(words)) for words in sentences]
    word2vec = dict(
        epochs=vector_args.vector_epochs,
        sg=int(vector_args.vector_algorithm == "skipgram"),
        min_count=vector_args.vector_min_count,
        seed=seed,
    )
    # --combine_vectors: the --word_vectors file with word2vec trained here (finetune/vectors/combination.py)
    combine, file = vector_args.combine_vectors, vector_args.word_vectors
    if combine != "none":
        from finetune.vectors.combination import concat_word_vectors, continue_word_vectors

        logger.info("--combine_vectors %s: %s with word2vec trained on %d sentences", combine, file, len(sentences))
        if combine == "continue":
            return continue_word_vectors(file, sentences, **word2vec)
        return concat_word_vectors(file, sentences, vector_size=vector_args.vector_size, **word2vec)
    logger.info("No --word_vectors given: training word2vec on %d sentences", len(sentences))
    return train_word_vectors(sentences, vector_size=vector_args.vector_size or DEFAULT_VECTOR_SIZE, **word2vec)


def head_config(head: HeadArguments, max_length: int, id2label: dict[int, str]) -> dict:
    """Config settings of the head (BiLSTM, pooling, classifier) and labels, whatever the encoder."""
    return dict(
        embedding_dropout=head.embedding_dropout,
        lstm_hidden_size=head.lstm_hidden_size,
        lstm_num_layers=head.lstm_num_layers,
        attention_dim=head.attention_dim,
        pooling=head.pooling,
        classifier_dropout=head.classifier_dropout,
        max_length=max_length,
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
    )


def vector_warnings(vector_args: WordVectorArguments, path, dim: int, coverage: dict) -> list[str]:
    """Warnings about the vectors used, logged here: almost no coverage, a `--vector_size` not used.

    Args:
        vector_args: `word_vectors` and `vector_size` as the user gave them.
        path: The vector file used.
        dim: Its dimension.
        coverage: The report of `build_embedding_matrix`.
    """
    warnings = coverage_warnings(coverage, path)
    if vector_args.word_vectors and vector_args.vector_size not in (None, dim):
        warnings.append(
            f"--vector_size {vector_args.vector_size} was not used: {path} holds {dim}-dimensional vectors, "
            f"so the embeddings have {dim} dimensions (--vector_size only sizes word2vec trained here)"
        )
    for warning in warnings:
        logger.warning("%s", warning)
    return warnings


def build_word_vector_model(splits: DatasetDict, id2label: dict[int, str], args: RunArguments) -> Built:
    """JiebaTokenizer + BiLSTM-attention model whose embeddings start from pretrained word vectors.

    Builds for `args.encoder.encoder_type`: `word_vectors`, or any kind registered with this builder
    whose encoder's `embeddings` is an `nn.Embedding(config.vocab_size, config.embedding_dim)`.
    Sets `args.vectors.vector_size` to the dimension of the vectors used (the file's, or word2vec's
    trained here), so that the run's config.yaml, written from `args`, records it.

    Args:
        splits: Clean splits with `text` and integer `label` columns.
        id2label: Label id -> name, as in the model config.
        args: The word vector, head and freezing settings, `max_seq_length`; the seed (of the random
            vectors of words the pretrained vectors lack). `vectors.vector_size` is updated.

    Returns:
        The model, tokenizer and encoded splits; the report holds `vectors` (the coverage of
        `build_embedding_matrix` and the file) and `warnings` (strings, see `vector_warnings`).
    """
    vector_args, seed, max_length = args.vectors, args.training.seed, args.data.max_seq_length
    tokenizer_kwargs = dict(
        segmenter=vector_args.segmenter,
        user_dict_file=vector_args.user_dict,
        split_unknown_words=vector_args.split_unknown_words,
        model_max_length=max_length,
        **normalization_kwargs(args.data),
    )
    segmenter = JiebaTokenizer(vocab=SPECIAL_TOKENS, **tokenizer_kwargs)
    segmented = segment_splits(splits, segmenter)
    counts = count_words(segmented["train"])
    path = (vector_args.combine_vectors == "none" and vector_args.word_vectors) or default_vectors_path(
        segmented["train"]["words"], segmenter, vector_args, seed
    )
    wanted = set(counts) | {char for word in counts for char in word}
    vectors = read_word_vectors(path, wanted=wanted)
    vocab = build_vocabulary(
        counts, min_freq=vector_args.min_freq, max_size=vector_args.max_vocab_size, keep=set(vectors.words)
    )
    tokenizer = JiebaTokenizer(vocab=vocab, **tokenizer_kwargs)
    token_counts = Counter()
    for words in segmented["train"]["words"]:
        token_counts.update(tokenizer.words_to_tokens(words))
    matrix, coverage = build_embedding_matrix(tokenizer.vocab, vectors, token_counts=token_counts, seed=seed)
    coverage["vectors"] = str(path)
    logger.info("%s: %s", path, format_coverage(coverage))
    report = {"vectors": coverage, "warnings": vector_warnings(vector_args, path, vectors.dim, coverage)}
    vector_args.vector_size = vectors.dim

    config = BiLSTMAttentionConfig(
        encoder_type=args.encoder.encoder_type,
        vocab_size=len(vocab),
        embedding_dim=vectors.dim,
        freeze_embeddings=args.freezing.freeze_embeddings,
        word_dropout=args.head.word_dropout,
        unk_token_id=tokenizer.unk_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **head_config(args.head, max_length, id2label),
    )
    if vector_args.char_vectors:
        chars, token_chars = token_characters(vocab, config.max_word_chars)
        config.char_vocab_size = len(chars)
    model = BiLSTMAttentionForSequenceClassification(config)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.from_numpy(matrix))
        if vector_args.char_vectors:
            model.encoder.token_chars.copy_(token_chars)
            # Zero at the start: the model begins as the word-vector model and learns what characters add.
            model.encoder.char_embeddings.weight.zero_()
    settings = apply_long_text(model, tokenizer, args, max_length)
    encoded = encode_splits(segmented, tokenizer, max_length, settings, args.data.train_windows)
    return Built(model, tokenizer, encoded, report)


def apply_long_text(model, tokenizer, args: RunArguments, max_length: int):
    """The run's long-text settings (`--long_text`, `--truncation`...) into the model's config (which
    `forward`, so `pipeline()`, applies) and the tokenizer (`prepare_tokenizer`); returns them."""
    settings = long_text_settings(args.data, tokenizer, max_length)
    model.config.update(long_text_config(settings))
    prepare_tokenizer(tokenizer, settings)
    return settings


def copy_encoder_weights(target: torch.nn.Module, pretrained: torch.nn.Module, ignore: tuple[str, ...] = ()) -> None:
    """Loads `pretrained`'s weights into the classifier's encoder; every encoder weight must be found.

    Args:
        target: The encoder module inside the classifier.
        pretrained: The loaded pretrained model.
        ignore: Prefixes of pretrained weights the classifier does not use (BERT's pooler).
    """
    state = {k: v for k, v in pretrained.state_dict().items() if not k.startswith(ignore)}
    missing, unexpected = target.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArgumentError(
            f"--model_name_or_path: the pretrained encoder does not match: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )


def _pretrained_encoder_model(
    encoder_type: str, pretrained, tokenizer, args: RunArguments, id2label
) -> BiLSTMAttentionForSequenceClassification:
    config = BiLSTMAttentionConfig(
        encoder_type=encoder_type,
        encoder_config=pretrained.config.to_dict(),
        encoder_name_or_path=args.encoder.model_name_or_path,
        encoder_layers=args.encoder.encoder_layers,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        **head_config(args.head, args.data.max_seq_length, id2label),
    )
    return BiLSTMAttentionForSequenceClassification(config)


def _encoder_max_length(tokenizer, pretrained, max_length: int) -> int:
    """`max_length`, capped by the positions the encoder was pretrained with."""
    positions = getattr(pretrained.config, "max_position_embeddings", None) or max_length
    return min(max_length, positions, tokenizer.model_max_length)


def normalization_kwargs(data) -> dict:
    """`JiebaTokenizer`'s character normalisation settings from `--traditional_to_simplified` and
    `--fullwidth_to_halfwidth` (the table and what it does)."""
    flags = {"traditional_to_simplified": data.traditional_to_simplified,
             "fullwidth_to_halfwidth": data.fullwidth_to_halfwidth}  # fmt: skip
    return {**flags, "char_map": normalization_map(**flags)}


def normalize_pretrained_tokenizer(tokenizer, data):
    """The same normalisation for a checkpoint's own (`tokenizers`-backed) tokenizer, in its tokenizer.json;
    the tokenizer unchanged when both flags are off."""
    flags = {"traditional_to_simplified": data.traditional_to_simplified,
             "fullwidth_to_halfwidth": data.fullwidth_to_halfwidth}  # fmt: skip
    char_map = normalization_map(**flags)
    return normalize_fast_tokenizer(tokenizer, char_map, **flags) if char_map else tokenizer


def build_transformer_model(splits: DatasetDict, id2label: dict[int, str], args: RunArguments) -> Built:
    """The checkpoint's own tokenizer + the classifier over its `AutoModel` (BERT, RoBERTa, ELECTRA...).

    Args:
        splits: Clean splits with `text` and integer `label` columns.
        id2label: Label id -> name, as in the model config.
        args: `model_name_or_path` (Hub id or directory), `encoder_layers`, head settings,
            `max_seq_length` (capped by the encoder's positions).
    """
    path = _require_encoder_path(args.encoder)
    with hub_errors(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        pretrained = AutoModel.from_pretrained(path)
    tokenizer = normalize_pretrained_tokenizer(tokenizer, args.data)
    trimmed = None
    if args.encoder.trim_vocabulary:
        corpus = args.encoder.trim_vocabulary_corpus
        texts = list(splits["train"]["text"]) + (read_text_lines(corpus) if corpus else [])
        tokenizer, pretrained, trimmed = trim_vocabulary(tokenizer, pretrained, texts)
    model = _pretrained_encoder_model("transformer", pretrained, tokenizer, args, id2label)
    copy_encoder_weights(model.encoder.model, pretrained, ignore=("pooler.",))
    max_length = _encoder_max_length(tokenizer, pretrained, args.data.max_seq_length)
    settings = apply_long_text(model, tokenizer, args, max_length)
    report = {"encoder": {"type": "transformer", "name_or_path": path, "architecture": type(pretrained).__name__}}
    if trimmed is not None:
        report["encoder"]["vocabulary_trim"] = trimmed
    encoded = encode_texts(splits, tokenizer, max_length, long_text=settings, train_windows=args.data.train_windows)
    return Built(model, tokenizer, encoded, report)


def build_bilm_model(splits: DatasetDict, id2label: dict[int, str], args: RunArguments) -> Built:
    """The biLM's character tokenizer + the classifier over the pretrained biLM (ELMo's scalar mix).

    Args:
        splits: Clean splits with `text` and integer `label` columns.
        id2label: Label id -> name, as in the model config.
        args: `model_name_or_path` (a `recipes/pretrain_bilm.py` output directory), head settings,
            `max_seq_length` (characters).
    """
    path = _require_encoder_path(args.encoder)
    with hub_errors(path):
        tokenizer = AutoTokenizer.from_pretrained(path)
        pretrained = BiLMForLanguageModeling.from_pretrained(path).bilm  # the LM head is not needed
    tokenizer = normalize_pretrained_tokenizer(tokenizer, args.data)
    model = _pretrained_encoder_model("bilm", pretrained, tokenizer, args, id2label)
    copy_encoder_weights(model.encoder.bilm, pretrained)
    settings = apply_long_text(model, tokenizer, args, args.data.max_seq_length)
    report = {"encoder": {"type": "bilm", "name_or_path": path, "layers": pretrained.config.num_layers}}
    encoded = encode_texts(splits, tokenizer, settings.max_length, long_text=settings,
                           train_windows=args.data.train_windows)  # fmt: skip
    return Built(model, tokenizer, encoded, report)


def _require_encoder_path(encoder) -> str:
    if not encoder.model_name_or_path:
        raise ArgumentError(f"--encoder_type {encoder.encoder_type} needs --model_name_or_path (Hub id or dir)")
    return encoder.model_name_or_path


def encoder_builder(encoder_type: str) -> Callable[..., Built]:
    """The builder registered with the encoder kind `encoder_type`, imported if it was given by name.

    Raises:
        ValueError: No kind of that name is registered.
    """
    builder = encoder_kind(encoder_type).builder
    if isinstance(builder, str):
        module, _, name = builder.partition(":")
        builder = getattr(importlib.import_module(module), name)
    return builder


class RegisteredBuilders(Mapping):
    """Encoder kind -> builder, read from the encoder registry (a kind registered later is in it too)."""

    def __getitem__(self, encoder_type: str) -> Callable[..., Built]:
        if encoder_type not in ENCODER_KINDS:
            raise KeyError(encoder_type)
        return encoder_builder(encoder_type)

    def __iter__(self) -> Iterator[str]:
        return iter(ENCODER_KINDS)

    def __len__(self) -> int:
        return len(ENCODER_KINDS)


BUILDERS = RegisteredBuilders()


def build_model(splits: DatasetDict, id2label: dict[int, str], args: RunArguments) -> Built:
    """The tokenizer, model and encoded splits for `args.encoder.encoder_type`, by its registered builder;
    a multi-label model's config says so (`problem_type`: BCE with logits, sigmoid scores in `pipeline()`)."""
    built = encoder_builder(args.encoder.encoder_type)(splits, id2label, args)
    if isinstance(splits["train"].features["label"], List):
        built.model.config.problem_type = MULTI_LABEL
        init_label_priors(built.model.classifier, splits["train"]["label"])
    return built


def init_label_priors(classifier: torch.nn.Linear, label_rows) -> None:
    """A multi-label classifier's biases set to the log-odds of each label's share of the training rows,
    so that training starts from the labels' base rates (the "prior" initialisation of Lin et al. 2017).

    From zero biases every sigmoid starts at 0.5: AdamW moves a bias by about the learning rate a step,
    and a label on 8% of the texts wants -2.4, over a thousand steps away; meanwhile the loss is spent
    pushing every logit down through the shared weights instead of telling labels apart. Measured on
    12 labels (news titles + reviews, 4,000 texts, 4 epochs): see docs/multi_label.md.
    """
    positives = torch.as_tensor(label_rows, dtype=torch.float64).mean(0)
    share = positives.clamp(1e-4, 1 - 1e-4)  # a label on no (or every) training row: a large, finite bias
    with torch.no_grad():
        classifier.bias.copy_(torch.log(share / (1 - share)).to(classifier.bias))
