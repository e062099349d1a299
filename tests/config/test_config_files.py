"""`--config`: shipped configs found by name from any directory, and one source of defaults: without
`--config` a recipe trains its shipped config's settings (the fine-tuning recipe's dataclass defaults ARE
word2vec_bilstm_attn.yaml; the recipes that share groups read their own config)."""

import dataclasses

import pytest
from conftest import CONFIG, ROOT

from finetune.config.arguments import RunArguments
from finetune.config.config_files import find_config, shipped_config_names, shipped_configs_dir
from finetune.config.distill_arguments import DISTILL_ARGUMENTS, parse_distill_args
from finetune.config.parsing import parse_recipe_args, parse_run_args
from finetune.errors import ArgumentError

SHIPPED = sorted(path.stem for path in (ROOT / "recipes" / "configs").glob("*.yaml"))


def settings(*groups) -> dict:
    return {name: value for group in groups for name, value in dataclasses.asdict(group).items()}


def test_the_defaults_are_the_word2vec_recipe_key_by_key():
    defaults = settings(*RunArguments.of().groups)
    shipped = settings(*parse_recipe_args(["--config", str(CONFIG)])[:-1])
    assert defaults.keys() == shipped.keys()
    assert {key: (defaults[key], shipped[key]) for key in defaults if defaults[key] != shipped[key]} == {}
    args, config_path = parse_run_args([])  # `finetune train` without --config
    assert settings(*args.groups) == shipped and config_path is None


def test_the_shipped_configs_are_the_repositorys():
    assert shipped_configs_dir().resolve() == (ROOT / "recipes" / "configs").resolve()
    assert shipped_config_names() == SHIPPED and "word2vec_bilstm_attn" in SHIPPED


@pytest.mark.parametrize("name", ["word2vec_bilstm_attn", "word2vec_bilstm_attn.yaml"])
def test_a_shipped_config_by_name_from_any_directory(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_config(name) == str(shipped_configs_dir() / "word2vec_bilstm_attn.yaml")
    args, config_path = parse_run_args(["--config", name, "--num_train_epochs", "2"])
    assert config_path.endswith("word2vec_bilstm_attn.yaml") and args.training.num_train_epochs == 2


def test_a_file_that_exists_is_read_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "word2vec_bilstm_attn.yaml").write_text("num_train_epochs: 7\n", encoding="utf-8")
    args, config_path = parse_run_args(["--config", "word2vec_bilstm_attn.yaml"])
    assert (config_path, args.training.num_train_epochs) == ("word2vec_bilstm_attn.yaml", 7)
    assert parse_run_args(["--config", "word2vec_bilstm_attn"])[0].training.num_train_epochs == 4  # the shipped one


@pytest.mark.parametrize(
    "value, hint",
    [("word2vec", "did you mean word2vec_bilstm_attn? "), ("bert_bilstm", "did you mean bert_bilstm_attn? "),
     ("configs/word2vec_bilstm_attn.yaml", "did you mean word2vec_bilstm_attn? "), ("zzz", "")],
)  # fmt: skip
def test_an_unknown_config_is_one_line_listing_the_shipped_ones(value, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a path that does not exist is not looked up by its name
    with pytest.raises(ArgumentError) as error:
        parse_run_args(["--config", value])
    assert (
        str(error.value)
        == f"--config {value}: no such file, nor a shipped config ({hint}shipped: {', '.join(SHIPPED)})"
    )


def test_distillation_without_config_is_its_shipped_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, config_path = parse_distill_args(["--teacher_model_name_or_path", "tfidf_lr"])
    shipped = ROOT / "recipes" / "configs" / "distill_bilstm_attn.yaml"
    expected = parse_recipe_args(
        ["--config", str(shipped), "--teacher_model_name_or_path", "tfidf_lr"], DISTILL_ARGUMENTS
    )
    assert settings(*args.groups, args.distill) == settings(*expected[:-1])
    assert config_path.endswith("distill_bilstm_attn.yaml")
    # what sets the student apart from the word2vec recipe's defaults
    assert (args.head.tfidf_branch, args.training.adversarial_epsilon) == (False, 0.0)
    assert args.training.output_dir == "outputs/distill_bilstm_attn"


@pytest.mark.parametrize("recipe, name", [("pretrain_bilm", "bilm_pretrain"), ("pretrain_mlm", "bert_mlm_pretrain")])
def test_pretraining_without_config_is_its_shipped_config(recipe, name, monkeypatch):
    import importlib

    module = importlib.import_module(f"finetune.recipes.{recipe}")
    parsed = []

    def parse_then_stop(argv, groups, default_config=None):
        parsed.append(parse_recipe_args(argv, groups, default_config))
        raise ArgumentError("stop here")

    monkeypatch.setattr(module, "parse_recipe_args", parse_then_stop)
    with pytest.raises(ArgumentError, match="stop here"):
        module.main([])
    *groups, config_path = parsed[0]
    assert config_path == str(shipped_configs_dir() / f"{name}.yaml")
    explicit = parse_recipe_args(["--config", config_path], tuple(type(group) for group in groups))
    assert settings(*groups) == settings(*explicit[:-1])


def test_other_encoders_are_told_to_turn_the_default_tfidf_branch_off(tiny_bert):
    with pytest.raises(ArgumentError, match=r"^--encoder_type transformer: the TF-IDF branch \(--tfidf_branch, on by"):
        parse_run_args(["--encoder_type", "transformer", "--model_name_or_path", str(tiny_bert)])
    args, _ = parse_run_args(["--config", "bert_bilstm_attn", "--model_name_or_path", str(tiny_bert)])
    assert (args.head.tfidf_branch, args.training.adversarial_epsilon) == (False, 0.0)
