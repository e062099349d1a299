"""`--config` files: the shipped ones found by name from any directory, a YAML read into flat
defaults, and unknown keys (or flags) named with the closest known one.

The shipped configs are the repository's `recipes/configs/`, installed as `finetune/recipes/configs/`
(the package `finetune.recipes`). Nothing here imports transformers: the `finetune` command's own
argument errors use `unknown_flag_error` and answer at once.
"""

import difflib
import importlib.util
from pathlib import Path

import yaml

from finetune.errors import ArgumentError

SUFFIXES = (".yaml", ".yml")


def shipped_configs_dir() -> Path:
    """The folder of the shipped configs: `finetune.recipes`' `configs/` (the repository's `recipes/configs`
    in an editable install), or `recipes/configs` beside the package in a clone that is only on the path."""
    spec = importlib.util.find_spec("finetune.recipes")  # the package's folder, without running its __init__
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "configs"
    return Path(__file__).resolve().parents[2] / "recipes" / "configs"


def shipped_config_names() -> list[str]:
    """The names `--config` takes for the shipped configs, e.g. `word2vec_bilstm_attn`."""
    return sorted(path.stem for path in shipped_configs_dir().glob("*.yaml"))


def find_config(value: str) -> str:
    """The file `--config VALUE` means: VALUE itself where such a file (or folder) exists, else the shipped
    config of that name (`word2vec_bilstm_attn` or `word2vec_bilstm_attn.yaml`).

    Raises:
        ArgumentError: Neither, naming the closest shipped config and listing them all.
    """
    if Path(value).exists():
        return value
    name = Path(value).name
    for suffix in SUFFIXES:
        name = name.removesuffix(suffix)
    shipped = shipped_configs_dir() / f"{name}.yaml"
    if value in (name, *(name + suffix for suffix in SUFFIXES)) and shipped.is_file():
        return str(shipped)
    names = shipped_config_names()
    close = [known for known in names if known.startswith(name)][:1] or difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise ArgumentError(f"--config {value}: no such file, nor a shipped config ({hint}shipped: {', '.join(names)})")


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


def read_config(path: str, names: set[str]) -> dict:
    """The flat defaults of a `--config` YAML file; every mistake named with the file and place.

    Args:
        path: The YAML file (`find_config`'s answer).
        names: The keys the recipe's argument groups know.
    """
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


def flatten_sections(config: dict) -> dict:
    """`lora: {r: 8, alpha: 16}` -> `lora_r: 8, lora_alpha: 16`: YAML sections become flat flags."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}_{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat
