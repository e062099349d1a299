"""The distillation recipe's arguments: the fine-tuning run's groups (`arguments.py`) plus the
distillation group (teachers, loss, transfer-set augmentation), parsed and checked."""

from dataclasses import dataclass, field

from finetune.config.arguments import RECIPE_ARGUMENTS, RunArguments
from finetune.config.checks import check_distill_args, check_run_args
from finetune.config.parsing import parse_recipe_args


@dataclass
class DistillationArguments:
    """Distillation (Tang et al. 2019): the teachers, the loss, and the transfer set's augmentation."""

    _argument_group_name = "distillation"

    teacher_model_name_or_path: list[str] | None = field(
        default=None,
        metadata={"help": "Saved classifier directories or Hub ids; several: an ensemble, probabilities averaged."},
    )
    distill_loss: str = field(
        default="mse", metadata={"help": "mse (logits, as Tang et al.) or kl (temperature-softened probabilities)."}
    )
    distill_alpha: float = field(
        default=0.5, metadata={"help": "Weight of the teacher term; 1 - alpha weighs cross-entropy on gold labels."}
    )
    distill_temperature: float = field(default=2.0, metadata={"help": "Softening temperature of distill_loss kl."})
    augment_copies: int = field(
        default=4, metadata={"help": "Augmented copies per training text (Tang et al.: 20 on small sets; 0: none)."}
    )
    p_mask: float = field(default=0.1, metadata={"help": "Chance of each word becoming [UNK]."})
    p_pos: float = field(default=0.1, metadata={"help": "Chance of each word becoming another of its part of speech."})
    p_ng: float = field(default=0.25, metadata={"help": "Chance of a copy being cut to a random n-gram of 1-5 words."})
    unlabelled_file: str | None = field(
        default=None, metadata={"help": "Unlabelled texts for the transfer set: one a line, or a table's text_column."}
    )
    unlabelled_corpus: bool = field(
        default=False, metadata={"help": "Add the embedded People's Daily 1998 sentences to the transfer set."}
    )
    max_unlabelled_samples: int | None = field(
        default=None, metadata={"help": "Take at most N unlabelled texts (a seeded sample)."}
    )
    teacher_batch_size: int = field(default=64, metadata={"help": "Texts per teacher forward pass."})


@dataclass
class DistillRunArguments(RunArguments):
    """A fine-tuning run's groups plus the distillation group."""

    distill: DistillationArguments


DISTILL_ARGUMENTS = (*RECIPE_ARGUMENTS, DistillationArguments)
DEFAULT_CONFIG = "distill_bilstm_attn"  # the shipped config read without --config


def parse_distill_args(argv: list[str] | None = None) -> tuple[DistillRunArguments, str | None]:
    """The distillation recipe's arguments, checked (`check_run_args`, `check_distill_args`); and the config path.

    Without `--config`, the shipped distill_bilstm_attn.yaml: its groups are the fine-tuning run's, whose
    defaults are the word2vec recipe's (a TF-IDF branch, adversarial training), not the student's."""
    *groups, config_path = parse_recipe_args(argv, DISTILL_ARGUMENTS, default_config=DEFAULT_CONFIG)
    args = DistillRunArguments(*groups)
    check_run_args(args)
    check_distill_args(args)
    return args, config_path
