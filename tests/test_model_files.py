"""finetune.model_files: a saved model directory that is missing, incomplete or damaged is named
before transformers fails on it; and the JiebaTokenizer names a text that is not a string."""

import json
import os
import re
import shutil

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import finetune  # noqa: F401  registers the model with the Auto classes
from finetune import JiebaTokenizer
from finetune.errors import FinetuneError, ModelDirectoryError
from finetune.files import saved_model_files
from finetune.model_files import check_finite_weights, check_model_directory, resolve_model_directory


def at(path) -> str:
    """A path as a regular expression that matches it."""
    return re.escape(str(path))


@pytest.fixture
def best(trained_run, tmp_path):
    """A copy of the trained run's model (its files, not the run's), free to damage."""
    (tmp_path / "best").mkdir()
    for name in saved_model_files(trained_run):
        shutil.copy2(trained_run / name, tmp_path / "best" / name)
    return tmp_path / "best"


def test_a_saved_model_passes(trained_run, tiny_bert):
    check_model_directory(trained_run)  # the model saved in the run directory, among the run's files
    check_model_directory(str(trained_run) + "/")
    check_model_directory(tiny_bert)  # a BertTokenizer: tokenizer.json, not vocab.txt
    check_finite_weights(AutoModelForSequenceClassification.from_pretrained(trained_run))


def test_model_directory_error_is_a_finetune_error():
    assert issubclass(ModelDirectoryError, FinetuneError) and issubclass(ModelDirectoryError, OSError)


@pytest.mark.parametrize("name", ["runs/reviews/best", "./best", "best/", "../runs/best", "runs//best"])
def test_missing_directory_that_is_no_hub_id(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelDirectoryError, match=f"^{name}: no such model directory$"):
        check_model_directory(name)


def test_missing_absolute_directory(tmp_path):
    with pytest.raises(ModelDirectoryError, match=f"^{at(tmp_path / 'nope')}: no such model directory$"):
        check_model_directory(tmp_path / "nope")


@pytest.mark.parametrize("repo_id", ["user/reviews-sentiment", "bert-base-chinese"])
def test_hub_repo_ids_are_left_to_transformers(tmp_path, monkeypatch, repo_id):
    monkeypatch.chdir(tmp_path)
    check_model_directory(repo_id)  # nothing is fetched: transformers will


def test_a_run_directory_of_the_earlier_layout_resolves_to_its_best(best, caplog):
    run = best.parent / "run"
    run.mkdir()
    os.replace(best, run / "best")  # the model in OUTPUT_DIR/best/, as runs of earlier versions saved it
    with pytest.raises(
        ModelDirectoryError, match=rf"^{at(run)}: no config.json: not a saved model \(give {at(run / 'best')}\)$"
    ):
        check_model_directory(run)
    with caplog.at_level("INFO", logger="finetune"):
        assert resolve_model_directory(run) == run / "best"
    assert f"{run}: a run directory of the earlier layout; loading the model in {run / 'best'}" in caplog.text
    assert resolve_model_directory(str(run)) == str(run / "best")
    assert resolve_model_directory(run / "best") == run / "best"
    assert resolve_model_directory("user/reviews-sentiment") == "user/reviews-sentiment"


def test_directory_without_config(best):
    os.remove(best / "config.json")
    with pytest.raises(
        ModelDirectoryError, match=rf"^{at(best)}: no config.json: not a saved model \(give a run's OUTPUT_DIR\)$"
    ):
        check_model_directory(best)


def test_a_file_instead_of_a_directory(best):
    with pytest.raises(ModelDirectoryError, match=rf"{at(best / 'config.json')}: not a directory"):
        check_model_directory(best / "config.json")


def test_damaged_config(best):
    (best / "config.json").write_text('{"model_type": "bilstm_attention",', encoding="utf-8")
    with pytest.raises(ModelDirectoryError, match=rf"{at(best / 'config.json')} is damaged: not a JSON file"):
        check_model_directory(best)


def test_no_weights_file(best):
    os.remove(best / "model.safetensors")
    with pytest.raises(
        ModelDirectoryError, match=rf"^{at(best)}: no weights file \(model.safetensors, adapter_model.safetensors"
    ):
        check_model_directory(best)


@pytest.mark.parametrize("keep", [0, 5, 100, -100, -1])
def test_truncated_safetensors(best, keep):
    weights = best / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:keep])

    with pytest.raises(ModelDirectoryError, match=rf"^{at(weights)} is damaged or truncated \(.+\)$") as caught:
        check_model_directory(best)
    if keep < 0:
        assert f"{size + keep:,} bytes where its header promises {size:,}" in str(caught.value)


def test_damaged_safetensors_header(best):
    weights = best / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[20] = ord("}")  # inside the JSON header
    weights.write_bytes(bytes(data))

    with pytest.raises(ModelDirectoryError, match=rf"{at(weights)} is damaged or truncated \(unreadable header"):
        check_model_directory(best)


def test_pytorch_bin_weights(best):
    model = AutoModelForSequenceClassification.from_pretrained(best)
    os.remove(best / "model.safetensors")
    torch.save(model.state_dict(), best / "pytorch_model.bin")
    check_model_directory(best)

    weights = best / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:-200])
    with pytest.raises(
        ModelDirectoryError, match=rf"{at(weights)} is damaged or truncated \(not a complete PyTorch zip"
    ):
        check_model_directory(best)


def test_shard_missing_from_an_index(best):
    os.replace(best / "model.safetensors", best / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (best / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}), encoding="utf-8")

    missing = best / "model-00002-of-00002.safetensors"
    with pytest.raises(ModelDirectoryError, match=rf"{at(missing)}: no such file, though model.safetensors.index.json"):
        check_model_directory(best)


def test_jieba_tokenizer_without_vocab(best):
    os.remove(best / "vocab.txt")
    with pytest.raises(ModelDirectoryError, match=rf"^{at(best)}: no vocab.txt \(its vocabulary\)"):
        check_model_directory(best)
    # Loaded anyway, the tokenizer says the same instead of `TypeError ... NoneType`.
    with pytest.raises(ValueError, match=rf"{at(best)}: no vocab.txt"):
        AutoTokenizer.from_pretrained(best)


def test_jieba_tokenizer_without_its_user_dictionary(best, tmp_path):
    user_dict = tmp_path / "words.txt"
    user_dict.write_text("好看极了 100\n", encoding="utf-8")
    vocab = (best / "vocab.txt").read_text(encoding="utf-8").splitlines()
    JiebaTokenizer(vocab=vocab, user_dict_file=str(user_dict)).save_pretrained(best)
    assert AutoTokenizer.from_pretrained(best).segment("好看极了") == ["好看极了"]  # the user word, as in training
    check_model_directory(best)

    os.remove(best / "user_dict.txt")
    with pytest.raises(ModelDirectoryError, match=rf"{at(best)}: no user_dict.txt \(the segmenter's user dictionary"):
        check_model_directory(best)
    with pytest.raises(
        ValueError, match=rf"{at(best)}: no user_dict.txt: the tokenizer was saved with a user dictionary"
    ):
        AutoTokenizer.from_pretrained(best)


def test_other_tokenizer_without_files(tiny_bert, tmp_path):
    copy = shutil.copytree(tiny_bert, tmp_path / "bert")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (copy / name).exists():
            os.remove(copy / name)
    with pytest.raises(ModelDirectoryError, match=rf"{at(copy)}: no tokenizer files \(tokenizer.json, vocab.txt or"):
        check_model_directory(copy)


def write_adapter(directory, base):
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}), "utf-8")
    save_file({"lora_A": torch.zeros(2, 2)}, directory / "adapter_model.safetensors")


def test_lora_adapter_checks_its_base(best, tmp_path):
    adapter = tmp_path / "adapter"
    write_adapter(adapter, best)
    check_model_directory(adapter)

    os.remove(best / "vocab.txt")  # pipeline() reads the tokenizer from the base
    with pytest.raises(ModelDirectoryError, match=rf"^{at(best)}: no vocab.txt"):
        check_model_directory(adapter)
    shutil.rmtree(best)
    with pytest.raises(
        ModelDirectoryError, match=rf"{at(adapter / 'adapter_config.json')}: base model {at(best)}: no such"
    ):
        check_model_directory(adapter)


def test_weights_that_are_not_finite(best):
    model = AutoModelForSequenceClassification.from_pretrained(best)
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("nan")
    model.save_pretrained(best)
    loaded = AutoModelForSequenceClassification.from_pretrained(best)

    with pytest.raises(
        ModelDirectoryError,
        match=rf"^{at(best)}: the weights hold NaN or inf values \(the run that saved it diverged\); first in classif",
    ):
        check_finite_weights(loaded)
    with pytest.raises(ModelDirectoryError, match=r"^elsewhere: the weights hold NaN"):
        check_finite_weights(loaded, "elsewhere")


# ##### JiebaTokenizer: texts that are not strings #####


@pytest.mark.parametrize(
    "texts, message",
    [
        (None, "text is None, expected a string or a list of strings"),
        (float("nan"), "text is float nan, expected a string or a list of strings"),
        ([None], "text 0 is None, expected a string"),
        (["很好", "不错", None], "text 2 is None, expected a string"),
        (["很好", 3.5], "text 1 is float 3.5, expected a string"),
    ],
)
def test_tokenizer_names_a_text_that_is_not_a_string(trained_run, texts, message):
    tokenizer = AutoTokenizer.from_pretrained(trained_run)
    with pytest.raises(TypeError, match=f"^{message}$"):
        tokenizer(texts)


def test_tokenizer_still_takes_strings_ids_and_targets(trained_run):
    tokenizer = AutoTokenizer.from_pretrained(trained_run)
    ids = tokenizer("这部电影很好")["input_ids"]
    assert tokenizer(["这部电影很好", "很差"])["input_ids"][0] == ids
    assert tokenizer(text_target="这部电影很好")["input_ids"] == ids
    with pytest.raises(ValueError, match="needs texts, not token ids"):  # its TF-IDF branch reads the text
        tokenizer(ids)
    tokenizer.set_tfidf(None)
    assert tokenizer(ids)["input_ids"] == ids  # a list of ids passes through, as transformers allows
    with pytest.raises(TypeError, match="^text is None, expected a string$"):
        tokenizer.segment(None)


def test_pipeline_names_a_missing_text(trained_run):
    classifier = pipeline("text-classification", model=str(trained_run))
    assert classifier(["这部电影很好"])[0]["label"] in ("negative", "positive")
    # pipeline() hands the tokenizer one text at a time: the tokenizer cannot know its index
    with pytest.raises(TypeError, match="^text is None, expected a string or a list of strings$"):
        classifier([None])
