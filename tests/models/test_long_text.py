"""Long texts: which tokens a cut keeps (head, tail, head+tail) for each encoder's tokenizer, windows
that cover a text and their aggregation, in the model, pipeline() (also without finetune), predict,
evaluation and training (two processes: test_recipe.py's DDP test)."""

import json
import math
import os

import datasets
import pytest
import torch
from conftest import (
    WITHOUT_FINETUNE,
    make_reviews,
    pretrained_encoder_model,
    run_pipeline,
    tiny_recipe_args,
    word_vector_model,
    write_csv,
)
from transformers import pipeline

from finetune.config.arguments import DataArguments
from finetune.config.parsing import parse_run_args
from finetune.data.features import (
    encode_splits,
    encode_texts,
    long_text_config,
    long_text_settings,
    prepare_tokenizer,
    segment_splits,
    special_token_counts,
)
from finetune.errors import ArgumentError
from finetune.evaluation.saved_model import evaluate_file
from finetune.inference.classifier import load_classifier
from finetune.inference.export import export_onnx
from finetune.inference.file_labelling import predict_file
from finetune.models.bilstm_attention import BiLSTMAttentionConfig
from finetune.models.bilstm_attention.long_text import LongText
from finetune.models.bilstm_attention.long_text_batches import aggregate_windows, truncate_batch, window_batch

LONG_TEXT = "这部电影很好，演员很精彩。酒店太差劲了，房间很糟糕，服务让人失望。快递很快，衣服很舒服，值得推荐！"
SHORT_TEXT = "很好"


@pytest.fixture(scope="module")
def models(tiny_bert, tiny_bilm, tmp_path_factory):
    """An untrained model and tokenizer of each encoder kind (cut: 12 tokens)."""
    return {
        "word_vectors": word_vector_model(tmp_path_factory.mktemp("wv")),
        "transformer": pretrained_encoder_model("transformer", tiny_bert),
        "bilm": pretrained_encoder_model("bilm", tiny_bilm),
    }


def configure(model, tokenizer, **flags) -> LongText:
    """The run's long-text flags applied to a model and its tokenizer, as the builders apply them."""
    settings = long_text_settings(DataArguments(**flags), tokenizer, model.config.max_length)
    model.config.update(long_text_config(settings))
    prepare_tokenizer(tokenizer, settings)
    return settings


def full_ids(tokenizer, text=LONG_TEXT) -> list[int]:
    return tokenizer(text, truncation=False, verbose=False)["input_ids"]


def logits(model, ids: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    width = max(len(row) for row in ids)
    input_ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in ids])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids])
    with torch.no_grad():
        return model.eval()(input_ids=input_ids, attention_mask=mask).logits


@pytest.mark.parametrize("kind, specials", [("word_vectors", (0, 0)), ("transformer", (1, 1)), ("bilm", (1, 1))])
@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
def test_a_cut_keeps_the_head_tail_or_both_and_the_special_tokens(models, kind, specials, truncation):
    model, tokenizer = models[kind]
    configure(model, tokenizer, truncation=truncation)
    assert special_token_counts(tokenizer) == specials
    full = full_ids(tokenizer)
    before, after = specials
    text = full[before : len(full) - after]
    assert len(text) > 30  # much longer than the 12-token cut
    content = 12 - before - after
    # head+tail: a quarter of the text tokens from the head, rounded half up (128 of 510, as Sun et al.)
    head = {"head": content, "tail": 0, "head+tail": 3}[truncation]  # 3 of 12 words, 3 of 10 characters
    expected = full[:before] + text[:head] + text[len(text) - (content - head) :] + full[len(full) - after :]
    assert len(expected) == 12 and (not before or expected[0] == tokenizer.cls_token_id)
    assert not after or expected[-1] == tokenizer.sep_token_id

    assert LongText.of(model.config).truncate(full) == expected
    # The model cuts an uncut input (as pipeline() gives it) the same way, in a padded batch too.
    cut_ids, cut_mask = truncate_batch(torch.tensor([full]), torch.ones(1, len(full), dtype=torch.long),
                                       LongText.of(model.config))  # fmt: skip
    assert cut_ids[0][cut_mask[0].bool()].tolist() == expected
    both = logits(model, [full, expected], tokenizer.pad_token_id)
    assert torch.allclose(both[0], both[1], atol=1e-5)
    # The tokenizer's own cut (transformers' truncation_side) agrees; head+tail is left to the model.
    called = tokenizer(LONG_TEXT, truncation=True)["input_ids"]
    assert called == (full if truncation == "head+tail" else expected)
    # Training and evaluation data are encoded alike.
    splits = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": [LONG_TEXT], "label": [0]})})
    settings = LongText.of(model.config)
    if kind == "word_vectors":
        encoded = encode_splits(segment_splits(splits, tokenizer), tokenizer, 12, settings)
    else:
        encoded = encode_texts(splits, tokenizer, 12, long_text=settings)
    assert encoded["test"]["input_ids"] == [expected]


def test_windows_cover_the_whole_text_with_the_stride():
    settings = LongText(max_length=7, mode="windows", doc_stride=2, max_windows=50, prefix=1, suffix=1)
    for length in range(0, 40):
        ids = [-1] + list(range(length)) + [-2]
        windows = settings.windows(ids)
        assert all(w[0] == -1 and w[-1] == -2 and len(w) <= 7 for w in windows)
        texts = [w[1:-1] for w in windows]
        assert sorted(set(sum(texts, []))) == list(range(length))  # every token is in a window
        for first, second in zip(texts, texts[1:]):
            assert first[-2:] == second[:2] and second[0] - first[0] == 3  # doc_stride 2 shared; a step of 3
        assert len(windows) == max(1, math.ceil((length - 5) / 3) + 1)
    capped = LongText(max_length=7, mode="windows", doc_stride=2, max_windows=3, prefix=1, suffix=1)
    assert len(capped.windows(list(range(100)))) == 3 and capped.input_limit == 7 + 2 * 3


def test_the_models_windows_are_the_lists_and_aggregate_by_mean_or_max():
    settings = LongText(max_length=6, mode="windows", doc_stride=1, max_windows=4, prefix=1, suffix=1)
    rows = [[101, *range(1, 12), 102], [101, 5, 6, 102], [101, *range(20, 28), 102]]
    width = max(map(len, rows))
    ids = torch.tensor([row + [0] * (width - len(row)) for row in rows])
    mask = (ids != 0).long()
    window_ids, window_mask, texts, _ = window_batch(ids, mask, settings, 0)
    got = [(int(t), w[m.bool()].tolist()) for t, w, m in zip(texts, window_ids, window_mask)]
    assert got == [(index, w) for index, row in enumerate(rows) for w in settings.windows(row)]

    # Two windows of one text at (0.9, 0.1) and (0.2, 0.8), one window of another at (0.3, 0.7).
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    texts = torch.tensor([0, 0, 1])
    mean = aggregate_windows(probabilities.log(), texts, 2, "mean", None).softmax(-1)
    assert torch.allclose(mean, torch.tensor([[0.55, 0.45], [0.3, 0.7]]))
    peak = aggregate_windows(probabilities.log(), texts, 2, "max", None).softmax(-1)
    assert torch.allclose(peak, torch.tensor([[0.9 / 1.7, 0.8 / 1.7], [0.3, 0.7]]))


@pytest.mark.parametrize("kind", ["word_vectors", "transformer", "bilm"])
@pytest.mark.parametrize("aggregation", ["mean", "max"])
def test_the_model_scores_each_window_and_aggregates(models, kind, aggregation):
    model, tokenizer = models[kind]
    settings = configure(model, tokenizer, long_text="windows", doc_stride=3, window_aggregation=aggregation)
    full = full_ids(tokenizer)
    windows = settings.windows(full)
    assert len(windows) > 2 and len(full) <= settings.input_limit
    each = logits(model, windows, tokenizer.pad_token_id).softmax(-1)
    want = each.mean(0) if aggregation == "mean" else each.amax(0) / each.amax(0).sum()
    short = full_ids(tokenizer, SHORT_TEXT)
    batch = logits(model, [full, short], tokenizer.pad_token_id).softmax(-1)
    assert torch.allclose(batch[0], want, atol=1e-5)
    assert torch.allclose(batch[1], logits(model, [short]).softmax(-1)[0], atol=1e-5)  # one window: as before
    with torch.no_grad():
        out = model(input_ids=torch.tensor([full]), output_attentions=True)
    assert out.attentions[0].shape == (1, len(full)) and out.attentions[0].sum().item() == pytest.approx(1, abs=1e-4)


@pytest.fixture(scope="module")
def saved_windows_models(models, tmp_path_factory):
    """The word-vector and BERT models saved with windows (mean), as a run would save them."""
    saved = {}
    for kind in ("word_vectors", "transformer"):
        model, tokenizer = models[kind]
        configure(model, tokenizer, long_text="windows", doc_stride=3)
        path = tmp_path_factory.mktemp(f"windows-{kind}")
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        saved[kind] = path
    return saved


def window_means(model_dir, texts):
    classifier = load_classifier(model_dir)
    model, tokenizer = classifier.model, classifier.tokenizer
    settings = LongText.of(model.config)
    rows = [full_ids(tokenizer, text) for text in texts]
    return [logits(model, settings.windows(ids), tokenizer.pad_token_id).softmax(-1).mean(0) for ids in rows]


@pytest.mark.parametrize("kind", ["word_vectors", "transformer"])
def test_pipeline_aggregates_windows_also_without_finetune(saved_windows_models, kind):
    model_dir = saved_windows_models[kind]
    saved = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert saved["long_text"] == "windows" and saved["doc_stride"] == 3
    texts = [LONG_TEXT, SHORT_TEXT]
    expected = window_means(model_dir, texts)
    in_process = pipeline("text-classification", model=str(model_dir))(texts, top_k=None)  # text by text
    batched = load_classifier(model_dir)(texts, top_k=None)  # the texts in one batch
    if kind == "transformer":  # [CLS]/[SEP] in every window, with the Hub's copy of the code
        result = run_pipeline(model_dir, texts, WITHOUT_FINETUNE, env=dict(os.environ), cwd=model_dir)
        assert not any(module.startswith("finetune") for module in result["modules"])
        in_process = result["scores"]
    for rows, want in zip([*in_process, *batched], expected * 2, strict=True):
        scores = {row["label"]: row["score"] for row in rows}
        assert [scores["negative"], scores["positive"]] == pytest.approx(want.tolist(), abs=1e-5)


def test_predict_and_evaluate_score_each_text_once(saved_windows_models, tmp_path):
    model_dir = saved_windows_models["word_vectors"]
    texts = [LONG_TEXT, SHORT_TEXT, LONG_TEXT * 3, "酒店太差劲了"]
    labels = ["positive", "positive", "negative", "negative"]
    source = write_csv(tmp_path / "long.csv", list(zip(texts, labels, strict=True)))
    assert predict_file(model_dir, source, tmp_path / "out.jsonl", top_k="all") == 4
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    for row, want in zip(rows, window_means(model_dir, texts), strict=True):
        assert [row["score_negative"], row["score_positive"]] == pytest.approx(want.tolist(), abs=1e-5)
    results = evaluate_file(model_dir, source, tmp_path / "evaluation")
    assert results["test_num_examples"] == 4
    correct = sum(row["predicted_label"] == label for row, label in zip(rows, labels, strict=True))
    assert results["test_accuracy"] == pytest.approx(correct / 4)


WINDOW_FLAGS = ("--max_seq_length", "5", "--long_text", "windows", "--doc_stride", "1", "--train_windows", "all",
                "--num_train_epochs", "1")  # fmt: skip


def test_training_on_all_windows_runs_end_to_end(tmp_path, tiny_vectors):
    from finetune.recipes.train_bilstm_attention import main

    rows = make_reviews(40, seed=3)
    train_file = write_csv(tmp_path / "train.csv", [(text + text, label) for text, label in rows])
    results = main(tiny_recipe_args(train_file, tiny_vectors, tmp_path / "run", *WINDOW_FLAGS))
    assert results["test_num_examples"] == 8  # per text, however many windows each has
    # 64 training texts of 10+ words in windows of 5: several windows each, each a training example
    assert results["train_steps"] > math.ceil(64 / 16)
    config = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))
    assert (config["long_text"], config["max_length"], config["doc_stride"]) == ("windows", 5, 1)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--truncation", "middle"], "--truncation middle: must be one of head, tail, head+tail"),
        (["--long_text", "chunks"], "--long_text chunks: must be one of truncate, windows"),
        (["--truncation_head_ratio", "1.5"], "--truncation_head_ratio 1.5: must be between 0 and 1"),
        (["--window_aggregation", "sum"], "--window_aggregation sum: must be one of mean, max"),
        (["--train_windows", "all"], "--train_windows all: needs --long_text windows"),
        (["--long_text", "windows", "--truncation", "tail"], "--truncation tail: applies to --long_text truncate"),
        (["--long_text", "windows", "--max_windows", "0"], "--max_windows 0: must be at least 1"),
    ],
)
def test_bad_flag_combinations_are_one_line(flags, message):
    with pytest.raises(ArgumentError, match="^" + message.replace("+", r"\+")):
        parse_run_args(["--output_dir", "x", *flags])


def test_a_stride_as_long_as_the_window_is_refused_with_the_tokenizers_special_tokens(models):
    model, tokenizer = models["transformer"]
    flags = DataArguments(long_text="windows", doc_stride=10)
    with pytest.raises(ArgumentError, match=r"^--doc_stride 10: must be 0 or more and below the 10 text tokens"):
        long_text_settings(flags, tokenizer, 12)
    with pytest.raises(ValueError, match="doc_stride must be"):
        BiLSTMAttentionConfig(long_text="windows", max_length=4, doc_stride=4, max_windows=2)


def test_onnx_export_refuses_windows_in_one_line(saved_windows_models, tmp_path):
    with pytest.raises(ArgumentError, match="long_text windows is not exported to ONNX") as error:
        export_onnx(saved_windows_models["word_vectors"], tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("kind, truncation", [("transformer", "head+tail"), ("word_vectors", "tail")])
def test_onnx_export_and_classifier_cut_as_the_model(models, tmp_path, kind, truncation):
    from finetune.inference.onnx_classifier import OnnxClassifier

    model, tokenizer = models[kind]
    configure(model, tokenizer, truncation=truncation)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    summary = export_onnx(tmp_path)  # refuses a graph whose logits differ from PyTorch's on long texts
    assert summary["fp32_max_abs_logit_difference"] < 1e-4
    texts = [LONG_TEXT, SHORT_TEXT, LONG_TEXT[::-1]]
    expected = load_classifier(tmp_path)(texts, top_k=None)
    for got, want in zip(OnnxClassifier(tmp_path)(texts, top_k=None), expected, strict=True):
        assert {row["label"]: pytest.approx(row["score"], abs=1e-4) for row in want} == {
            row["label"]: row["score"] for row in got
        }


def test_distillation_refuses_long_text_flags_in_one_line():
    from finetune.config.distill_arguments import parse_distill_args

    with pytest.raises(ArgumentError, match="^--long_text/--truncation: the distillation recipe trains the student"):
        parse_distill_args(["--output_dir", "x", "--truncation", "head+tail"])
