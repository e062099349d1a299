"""Read a recipe's argument groups: a `--config` YAML file gives the defaults, the command line
overrides them; every mistake is an `ArgumentError` that names the flag or the file's key. And the
way back: a run's arguments as a YAML file that `--config` reads.

Apart from the groups themselves (`finetune.config.arguments`, `finetune.config.training_arguments`) because the
pretraining recipes parse their own groups with it too. Without `--config`, a recipe whose groups another
recipe shares (distillation; the two pretraining jobs share `PretrainArguments`) reads its own shipped config
(`default_config`); the fine-tuning recipe's settings are its dataclasses' defaults.
"""

import argparse
import dataclasses

import yaml
from transformers import HfArgumentParser

from finetune.config.arguments import RECIPE_ARGUMENTS, RunArguments
from finetune.config.checks import check_run_args
from finetune.config.config_files import find_config, read_config, shipped_config_names, unknown_flag_error
from finetune.errors import DEBUG_HELP, ArgumentError


class RecipeArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose mistakes are `ArgumentError`s (one line, naming the flag) rather than
    argparse's usage dump and exit, so the recipes report them like every other user error.

    Abbreviated flags are refused: argparse would read `--learning_rat` as `--learning_rate` and
    `--lora` as whichever `--lora_*` flag it happens to prefix alone."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise ArgumentError(f"{message} (see --help)")


def parse_recipe_args(
    argv: list[str] | None = None, groups=RECIPE_ARGUMENTS, default_config: str | None = None
) -> tuple:
    """Parses `--config FILE.yaml` or `--config NAME` (defaults) then the other flags (overrides) into `groups`.

    Args:
        argv: Command line without the program name; `None` reads `sys.argv`.
        groups: Dataclass types to fill.
        default_config: The shipped config read when `argv` has no `--config` (None: the groups' defaults).

    Returns:
        One instance per group, in order, plus the config file path (or `None`) as the last item.

    Raises:
        ArgumentError: An unknown flag or config key (the closest known one is named), a value of
            the wrong type, or a config file that is missing (nor a shipped config's name) or not YAML.
    """
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config", default=None)
    known, rest = pre.parse_known_args(argv)
    parser = RecipeArgumentParser(
        groups,
        usage="%(prog)s [--config FILE.yaml|NAME] [--FLAG VALUE ...]",
        description="Every flag below can be given in the --config YAML too; the command line overrides it.",
    )
    parser.add_argument(
        "--config",
        default=default_config,
        help=f"YAML file with defaults for every flag below, or a shipped config's name: "
        f"{', '.join(shipped_config_names())}.",
    )
    # report_errors takes --debug out of argv before parsing; it is declared for --help only.
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    names = {f.name for group in groups for f in dataclasses.fields(group)}
    config_path = find_config(known.config or default_config) if known.config or default_config else None
    if config_path:
        parser.set_defaults(**read_config(config_path, names))
    # The last two items: the namespace left over (--config), the strings no flag took.
    *parsed, _, unknown = parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    if unknown:
        raise unknown_flag_error(unknown, [f"--{name}" for name in sorted(names)] + ["--config"])
    for group in parsed:
        _split_lists(group)
    return (*parsed, config_path)


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


def to_yaml(*groups) -> str:
    """The arguments of a run, as a YAML file that `--config` reads back."""
    merged = {}
    for group in groups:
        merged.update(dataclasses.asdict(group))
    return yaml.safe_dump(merged, allow_unicode=True, sort_keys=False)
