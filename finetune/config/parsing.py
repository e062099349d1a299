"""Read a recipe's argument groups: a `--config` YAML file gives the defaults, the command line
overrides them; every mistake is an `ArgumentError` that names the flag or the file's key. And the
way back: a run's arguments as a YAML file that `--config` reads.

Apart from the groups themselves (`finetune.config.arguments`, `finetune.config.training_arguments`) because the
pretraining recipes parse their own groups with it too.
"""

import argparse
import dataclasses
import difflib
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from finetune.config.arguments import RECIPE_ARGUMENTS, RunArguments
from finetune.config.checks import check_run_args
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
