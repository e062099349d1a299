"""Checks of the fine-tuning recipe's arguments that their types cannot make: ranges, choices,
files that must exist, flags that go together; and the two names they settle (the best-model
metric, the trackers)."""

from pathlib import Path

from finetune.config.training_arguments import LOSSES
from finetune.errors import ArgumentError
from finetune.model_files import is_hub_id

# Validation metrics that can pick the best model (`metric_for_best_model`), as metrics.json names
# them after `validation_`; transformers' `eval_` prefix is accepted too.
# `f1:LABEL` picks by one label's F1 (checked against the labels once the data is read).
BEST_MODEL_METRICS = ("macro_f1", "micro_f1", "accuracy", "weighted_f1", "loss", "exact_match")
LABEL_F1 = "f1:"
STRATEGIES = {"eval_strategy": ("epoch", "steps"), "save_strategy": ("epoch", "steps", "no")}
EXTRAS = ("tensorboard",)  # trackers finetune-zh installs as an extra (pyproject's optional-dependencies)


def resolve_best_model_metric(training, multi_label: bool) -> None:
    """Fills in `metric_for_best_model` when it was left unset, once the data says what it holds:
    micro_f1 for multi-label data, macro_f1 otherwise (config.yaml then records what was used)."""
    if training.metric_for_best_model is None:
        training.metric_for_best_model = "micro_f1" if multi_label else "macro_f1"


def best_model_metric(name: str) -> str:
    """`metric_for_best_model` as metrics.json names it after `validation_` (`eval_accuracy` -> `accuracy`)."""
    for prefix in ("eval_", "validation_"):
        name = name.removeprefix(prefix)
    return name


def check_label_settings(training, label_names: list[str]) -> None:
    """The flags that name labels, once the data has given them: `--metric_for_best_model f1:LABEL`.
    (`--class_weights` is checked where the weights are made, `losses.training_loss`.)

    Raises:
        ArgumentError: An unknown label, naming the known ones.
    """
    metric = best_model_metric(training.metric_for_best_model)
    if metric.startswith(LABEL_F1) and metric.removeprefix(LABEL_F1) not in label_names:
        raise ArgumentError(
            f"--metric_for_best_model {training.metric_for_best_model}: no label "
            f"'{metric.removeprefix(LABEL_F1)}' (the labels: {', '.join(label_names)})"
        )


def trackers(report_to: list[str]) -> list[str]:
    """The trackers `report_to` asks for, checked against accelerate's and what is installed."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = [str(getattr(t, "value", t)) for t in get_available_trackers()]
    if report_to in (["none"], []):
        return []
    if report_to == ["all"]:
        return available
    for name in report_to:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ArgumentError(
                f"--report_to {name}: not a tracker (one of {', '.join(LOGGER_TYPE_TO_CLASS)}, none, all)"
            )
        if name not in available:
            install = f'"finetune-zh[{name}]"' if name in EXTRAS else name
            raise ArgumentError(f"--report_to {name}: the {name} package is not installed (pip install {install})")
    return list(report_to)


def check_run_args(args) -> None:
    """Checks values the types cannot (`args`: a `RunArguments`): ranges, choices, files that must
    exist, flags that go together.

    Raises:
        ArgumentError: naming the flag.
    """
    # The choices other packages define, imported here rather than at the top: parsing the command line
    # (and its errors) stays free of torch and datasets, so a mistyped flag answers at once.
    from finetune.data.features import TRAIN_WINDOWS
    from finetune.data.multilabel import THRESHOLD_STRATEGIES
    from finetune.models.bilstm_attention import ENCODER_TYPES, encoder_kind
    from finetune.models.bilstm_attention.configuration_bilstm_attention import POOLINGS
    from finetune.models.bilstm_attention.long_text import LONG_TEXT_MODES, TRUNCATIONS, WINDOW_AGGREGATIONS

    data, encoder, vectors, training = args.data, args.encoder, args.vectors, args.training
    positive = ("max_train_samples", "max_eval_samples", "max_predict_samples")
    problems = {
        "--encoder_type": encoder.encoder_type not in ENCODER_TYPES and f"one of {', '.join(ENCODER_TYPES)}",
        "--pooling": args.head.pooling not in POOLINGS and f"one of {', '.join(POOLINGS)}",
        "--segmenter": vectors.segmenter not in ("rjieba", "jieba", "char") and "rjieba, jieba or char",
        "--combine_vectors": vectors.combine_vectors not in ("none", "continue", "concat")
        and "none, continue or concat",
        "--learning_rate": not training.learning_rate > 0 and "a number above 0",
        "--num_train_epochs": training.num_train_epochs < 1 and training.max_steps <= 0 and "at least 1",
        "--per_device_train_batch_size": training.per_device_train_batch_size < 1 and "at least 1",
        "--per_device_eval_batch_size": training.per_device_eval_batch_size < 1 and "at least 1",
        "--gradient_accumulation_steps": training.gradient_accumulation_steps < 1 and "at least 1",
        "--max_seq_length": data.max_seq_length < 1 and "at least 1",
        "--long_text": data.long_text not in LONG_TEXT_MODES and f"one of {', '.join(LONG_TEXT_MODES)}",
        "--truncation": data.truncation not in TRUNCATIONS and f"one of {', '.join(TRUNCATIONS)}",
        "--truncation_head_ratio": not 0 <= data.truncation_head_ratio <= 1 and "between 0 and 1",
        "--doc_stride": data.doc_stride is not None and data.doc_stride < 0 and "0 or more",
        "--max_windows": data.max_windows < 1 and "at least 1",
        "--window_aggregation": data.window_aggregation not in WINDOW_AGGREGATIONS
        and f"one of {', '.join(WINDOW_AGGREGATIONS)}",
        "--train_windows": data.train_windows not in TRAIN_WINDOWS and f"one of {', '.join(TRAIN_WINDOWS)}",
        "--validation_size": not 0 <= data.validation_size < 1 and "between 0 and 1",
        "--test_size": not 0 <= data.test_size < 1 and "between 0 and 1",
        "--logging_steps": args.logging.logging_steps < 1 and "at least 1",
        "--adversarial_epsilon": training.adversarial_epsilon < 0 and "0 or more",
        "--adversarial_interval": training.adversarial_interval < 1 and "1 or more",
        "--max_grad_norm": not training.max_grad_norm > 0 and "a number above 0",
        "--eval_strategy": training.eval_strategy not in STRATEGIES["eval_strategy"] and "epoch or steps",
        "--eval_steps": training.eval_steps is not None and training.eval_steps < 1 and "at least 1",
        "--save_strategy": training.save_strategy not in STRATEGIES["save_strategy"] and "epoch, steps or no",
        "--save_steps": training.save_steps < 1 and "at least 1",
        "--threshold_strategy": training.threshold_strategy not in THRESHOLD_STRATEGIES and "global or per_label",
        "--metric_for_best_model": training.metric_for_best_model is not None
        and best_model_metric(training.metric_for_best_model) not in BEST_MODEL_METRICS
        and not best_model_metric(training.metric_for_best_model).startswith(LABEL_F1)
        and f"one of {', '.join(BEST_MODEL_METRICS)}, or f1:LABEL",
        "--loss": training.loss not in LOSSES and f"one of {', '.join(LOSSES)}",
        "--focal_gamma": training.focal_gamma < 0 and "0 or more",
        **{
            f"--{name}": getattr(data, name) is not None and getattr(data, name) < 1 and "at least 1"
            for name in positive
        },
    }
    for flag, wanted in problems.items():
        if wanted:
            value = next(getattr(g, flag[2:]) for g in args.groups if hasattr(g, flag[2:]))
            raise ArgumentError(f"{flag} {value}: must be {wanted}")
    trackers(args.logging.report_to)
    if data.long_text != "windows" and data.train_windows == "all":
        raise ArgumentError("--train_windows all: needs --long_text windows (a cut text has one window)")
    if data.long_text == "windows" and data.truncation != "head":
        raise ArgumentError(f"--truncation {data.truncation}: applies to --long_text truncate; windows cover a text")
    if training.bf16 and training.fp16:
        raise ArgumentError("--bf16 and --fp16: give one mixed precision")
    if data.dataset_name and (data.train_file or data.validation_file or data.test_file):
        raise ArgumentError("--dataset_name and --train_file/--validation_file/--test_file: give one source of data")
    if data.validation_file is None and not data.dataset_name and data.validation_size == 0:
        raise ArgumentError("--validation_size 0 needs --validation_file: the best model is chosen on validation")
    if vectors.combine_vectors != "none" and not vectors.word_vectors:
        raise ArgumentError(f"--combine_vectors {vectors.combine_vectors}: needs --word_vectors (the file to combine)")
    for flag, path in (("--word_vectors", vectors.word_vectors), ("--user_dict", vectors.user_dict)):
        if path and not Path(path).is_file():
            raise ArgumentError(f"{flag} {path}: no such file")
    if encoder_kind(encoder.encoder_type).pretrained_from == "checkpoint" and not encoder.model_name_or_path:
        raise ArgumentError(f"--encoder_type {encoder.encoder_type} needs --model_name_or_path")
    name = encoder.model_name_or_path
    if name and not Path(name).exists() and not is_hub_id(name):
        raise ArgumentError(f"--model_name_or_path {name}: no such directory (nor a Hub id)")
    if (encoder.trim_vocabulary or encoder.trim_vocabulary_corpus) and encoder.encoder_type != "transformer":
        raise ArgumentError(
            f"--trim_vocabulary trims a transformer's pieces; --encoder_type {encoder.encoder_type} builds its "
            "vocabulary from the data already"
        )
    if encoder.trim_vocabulary_corpus and not encoder.trim_vocabulary:
        raise ArgumentError("--trim_vocabulary_corpus is read by --trim_vocabulary: give --trim_vocabulary true")
    if encoder.trim_vocabulary_corpus and not Path(encoder.trim_vocabulary_corpus).is_file():
        raise ArgumentError(f"--trim_vocabulary_corpus {encoder.trim_vocabulary_corpus}: no such file")
    if args.head.tfidf_branch and encoder.encoder_type != "word_vectors":
        raise ArgumentError(
            f"--encoder_type {encoder.encoder_type}: the TF-IDF branch (--tfidf_branch, on by default) reads the "
            "word-vector tokenizer's n-grams; give --tfidf_branch false (as --config bert_bilstm_attn does)"
        )
    if training.overwrite_output_dir and training.resume_from_checkpoint == "latest":
        raise ArgumentError(
            "--overwrite_output_dir empties the directory that --resume_from_checkpoint latest resumes from: give one"
        )
    if not training.do_train and (training.overwrite_output_dir or training.resume_from_checkpoint):
        raise ArgumentError(
            "--do_train false evaluates OUTPUT_DIR/best: --overwrite_output_dir/--resume_from_checkpoint"
        )
    if args.hub.push_to_hub and not args.hub.hub_model_id:
        raise ArgumentError("--push_to_hub needs --hub_model_id (user/name on the Hub)")
    if args.lora.enabled and (args.freezing.freezes_anything):
        raise ArgumentError("--lora_r: LoRA freezes the encoder itself; drop the freeze_* / gradual_unfreezing flags")


def check_distill_args(args) -> None:
    """Checks the distillation group (`args`: a `DistillRunArguments`): a teacher that exists, ranges, choices.

    Raises:
        ArgumentError: naming the flag.
    """
    distill = args.distill
    if args.data.long_text != "truncate" or args.data.truncation != "head":
        raise ArgumentError(
            "--long_text/--truncation: the distillation recipe trains the student on each text's head (a teacher "
            "may read long texts any way)"
        )
    if not distill.teacher_model_name_or_path:
        raise ArgumentError("--teacher_model_name_or_path: give the teacher's saved classifier directory (or several)")
    from finetune.evaluation.baselines import BASELINES  # the baselines that can teach, by name

    for teacher in distill.teacher_model_name_or_path:
        if teacher in BASELINES:
            if Path(teacher).exists():
                raise ArgumentError(
                    f"--teacher_model_name_or_path {teacher}: both a baseline's name and a path here; give ./{teacher}"
                )
        elif not Path(teacher).exists() and not is_hub_id(teacher):
            raise ArgumentError(
                f"--teacher_model_name_or_path {teacher}: no such directory (nor a Hub id, nor a baseline: "
                f"{', '.join(BASELINES)})"
            )
    if args.encoder.encoder_type != "word_vectors":
        raise ArgumentError(f"--encoder_type {args.encoder.encoder_type}: the student is a word_vectors model")
    if args.training.class_weights != "none" or args.training.loss != "cross_entropy":
        raise ArgumentError("--class_weights/--loss: the student learns the teacher's scores (--distill_loss)")
    if args.lora.enabled:
        raise ArgumentError("--lora_r: the student trains in full (LoRA is for large pretrained encoders); drop it")
    problems = {
        "--distill_loss": distill.distill_loss not in ("mse", "kl") and "mse or kl",
        "--distill_alpha": not 0 <= distill.distill_alpha <= 1 and "between 0 and 1",
        "--distill_temperature": not distill.distill_temperature > 0 and "a number above 0",
        "--augment_copies": distill.augment_copies < 0 and "0 or more",
        "--p_mask": not 0 <= distill.p_mask <= 1 and "between 0 and 1",
        "--p_pos": not 0 <= distill.p_pos <= 1 and "between 0 and 1",
        "--p_ng": not 0 <= distill.p_ng <= 1 and "between 0 and 1",
        "--teacher_batch_size": distill.teacher_batch_size < 1 and "at least 1",
        "--max_unlabelled_samples": distill.max_unlabelled_samples is not None
        and distill.max_unlabelled_samples < 1
        and "at least 1",
    }
    for flag, wanted in problems.items():
        if wanted:
            raise ArgumentError(f"{flag} {getattr(distill, flag[2:])}: must be {wanted}")
    if distill.p_mask + distill.p_pos > 1:
        raise ArgumentError(f"--p_mask {distill.p_mask} + --p_pos {distill.p_pos}: must be at most 1")
    if distill.unlabelled_file and not Path(distill.unlabelled_file).is_file():
        raise ArgumentError(f"--unlabelled_file {distill.unlabelled_file}: no such file")
