"""The arguments of a run: typed groups by concern (`arguments`, `training_arguments`,
`tuning_arguments`, `distill_arguments`), read from a YAML (`config_files`: the shipped ones by name)
and the command line (`parsing`), checked (`checks`).

Importing it loads neither torch nor datasets, so argument errors answer at once; and its names load
on first use (PEP 562), so the `finetune` command's own flags (`config_files`) do not wait for
transformers, which `parsing` imports for `HfArgumentParser`."""

import importlib

_WHERE = {
    "DataArguments": "arguments",
    "RunArguments": "arguments",
    "check_label_settings": "checks",
    "resolve_best_model_metric": "checks",
    "DistillRunArguments": "distill_arguments",
    "parse_distill_args": "distill_arguments",
    "find_config": "config_files",
    "shipped_config_names": "config_files",
    "parse_recipe_args": "parsing",
    "parse_run_args": "parsing",
    "to_yaml": "parsing",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'finetune.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"finetune.config.{_WHERE[name]}"), name)
