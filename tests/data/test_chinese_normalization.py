"""Traditional -> simplified and full-width -> half-width in the tokenizer: the table travels with the
tokenizer files, so training, pipeline() without finetune (or OpenCC) and the ONNX path read the same text."""

import json
import os

import opencc
import pytest
from conftest import (
    BILM_CONFIG,
    WITHOUT_FINETUNE,
    encoder_recipe_args,
    make_reviews,
    run_pipeline,
    tiny_recipe_args,
    write_csv,
)
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from finetune import JiebaTokenizer
from finetune.data.normalization import normalization_map, normalize_fast_tokenizer, traditional_to_simplified_map
from finetune.inference.onnx_classifier import _JiebaIds
from finetune.models.bilstm_attention.normalization_chinese import CharNormalizer, fullwidth_to_halfwidth_map
from finetune.recipes.train_bilstm_attention import main

TO_TRADITIONAL = opencc.OpenCC("s2t.json")
# pipeline() where neither finetune nor OpenCC can be imported: the table must come from the files
WITHOUT_FINETUNE_OR_OPENCC = WITHOUT_FINETUNE.replace('("finetune", "recipes")', '("finetune", "recipes", "opencc")')


def test_fullwidth_letters_digits_and_space_become_ascii_punctuation_stays():
    normalize = CharNormalizer(fullwidth_to_halfwidth_map())
    assert (
        normalize("ＩＰｈｏｎｅ１５\u3000真的很好，価格１２００元！（推荐）")
        == "IPhone15 真的很好，価格1200元！（推荐）"
    )


def test_traditional_table_from_opencc():
    table = traditional_to_simplified_map()
    assert 4000 < len(table) < 5000  # OpenCC t2s, one character for one
    assert CharNormalizer(table)("這家酒店設施已經陳舊了，服務還可以") == "这家酒店设施已经陈旧了，服务还可以"
    assert normalization_map(False, False) is None
    assert normalization_map(True, True)["Ｑ"] == "Q"


def test_lower_casing_follows_normalisation():
    vocab = ["[PAD]", "[UNK]", "iphone", "很", "好"]
    lower = JiebaTokenizer(vocab=vocab, char_map=fullwidth_to_halfwidth_map(), fullwidth_to_halfwidth=True)
    assert lower.tokenize("ＩＰｈｏｎｅ很好") == ["iphone", "很", "好"]
    cased = JiebaTokenizer(vocab=vocab, char_map=fullwidth_to_halfwidth_map(), do_lower_case=False)
    assert cased.tokenize("ＩＰｈｏｎｅ") == list("IPhone")  # not in the vocabulary: read as characters


def test_a_tokenizer_saved_normalising_refuses_to_load_without_its_table(tmp_path):
    tokenizer = JiebaTokenizer(vocab=["[PAD]", "[UNK]"], char_map={"們": "们"}, traditional_to_simplified=True)
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "char_map.json").read_text(encoding="utf-8")) == {"們": "们"}
    (tmp_path / "char_map.json").unlink()
    with pytest.raises(ValueError, match="no char_map.json: the tokenizer was saved normalising characters"):
        JiebaTokenizer.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def normalising_run(tiny_vectors, tmp_path_factory):
    """A word-vector model trained on simplified reviews with both normalisations on."""
    data = tmp_path_factory.mktemp("simplified")
    csv = write_csv(data / "reviews.csv", make_reviews(150, seed=5))
    output_dir = data / "run"
    main(tiny_recipe_args(csv, tiny_vectors, output_dir, "--traditional_to_simplified", "true",
                          "--fullwidth_to_halfwidth", "true"))  # fmt: skip
    return output_dir


def test_traditional_text_gets_the_simplified_predictions(normalising_run, tmp_path):
    texts = [text for text, _ in make_reviews(60, seed=9)]
    traditional = [TO_TRADITIONAL.convert(text) for text in texts]
    assert sum(a != b for a, b in zip(texts, traditional)) >= 100  # most texts have traditional forms
    config = json.loads((normalising_run / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["traditional_to_simplified"] and config["fullwidth_to_halfwidth"]

    simplified_scores = run_pipeline(normalising_run, texts, WITHOUT_FINETUNE_OR_OPENCC, env=dict(os.environ),
                                     cwd=normalising_run)["scores"]  # fmt: skip
    result = run_pipeline(normalising_run, traditional, WITHOUT_FINETUNE_OR_OPENCC, env=dict(os.environ),
                          cwd=normalising_run)  # fmt: skip
    assert not any(module.startswith("finetune") for module in result["modules"])
    agree = sum(a[0]["label"] == b[0]["label"] for a, b in zip(simplified_scores, result["scores"]))
    assert agree == len(texts)  # measured: 120 of 120

    # Without the table the same model reads the traditional texts differently
    plain = JiebaTokenizer.from_pretrained(normalising_run, char_map={"x": "x"})
    normalising = JiebaTokenizer.from_pretrained(normalising_run)
    differ = sum(plain.tokenize(t) != normalising.tokenize(t) for t in traditional)
    assert differ >= 100
    # ... and the ONNX classifier's tokenizer applies the table as JiebaTokenizer does
    onnx_ids = _JiebaIds(normalising_run, config)(traditional)
    assert onnx_ids == [normalising(t, truncation=True)["input_ids"] for t in traditional]


def test_fast_tokenizer_carries_the_table_in_tokenizer_json(tiny_bert, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    before = tokenizer.tokenize("這部電影很好")
    normalizing = normalize_fast_tokenizer(tokenizer, normalization_map(True, True), traditional_to_simplified=True)
    rules = json.loads(normalizing.backend_tokenizer.to_str())["normalizer"]["normalizers"]
    assert 20 < len(rules) < 200  # of 4,284: only characters the tiny vocabulary knows
    normalizing.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))["traditional_to_simplified"]
    reloaded = AutoTokenizer.from_pretrained(tmp_path)  # no custom code: tokenizer.json's normalizer
    assert reloaded("這部電影很好")["input_ids"] == tokenizer("这部电影很好")["input_ids"]
    assert reloaded.tokenize("這部電影很好") != before
    assert reloaded.tokenize("ＡＢＣ") == tokenizer.tokenize("abc")
    rust = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))  # the ONNX classifier's reader
    assert rust.encode("這部電影").ids == reloaded("这部电影")["input_ids"]


def test_bilm_recipe_saves_a_normalising_tokenizer(reviews_csv, tiny_bilm, tmp_path):
    """The biLM's character tokenizer (as a transformer's) carries the table into the run's model: pipeline()
    without finetune or OpenCC gives traditional texts the scores of their simplified forms."""
    main(encoder_recipe_args(BILM_CONFIG, reviews_csv, tiny_bilm, tmp_path, "--max_steps", "6",
                             "--traditional_to_simplified", "true"))  # fmt: skip
    texts = [text for text, _ in make_reviews(10, seed=11)]
    traditional = [TO_TRADITIONAL.convert(text) for text in texts]
    got = run_pipeline(tmp_path, texts + traditional, WITHOUT_FINETUNE_OR_OPENCC, env=dict(os.environ), cwd=tmp_path)
    simplified, converted = got["scores"][: len(texts)], got["scores"][len(texts) :]
    for a, b in zip(simplified, converted, strict=True):
        assert {row["label"]: pytest.approx(row["score"], abs=1e-6) for row in a} == {
            row["label"]: row["score"] for row in b
        }
