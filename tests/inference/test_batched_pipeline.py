"""BatchedTextClassificationPipeline: a list of texts in length-sorted batches, with the results of
transformers' TextClassificationPipeline (which runs the texts one by one)."""

import pytest
from transformers import TextClassificationPipeline, pipeline

from finetune.errors import ArgumentError
from finetune.inference.batched_pipeline import BatchedTextClassificationPipeline
from finetune.inference.classifier import load_classifier


@pytest.fixture(scope="module")
def pipelines(trained_run):
    model = trained_run
    return pipeline("text-classification", model=str(model)), load_classifier(model)


@pytest.fixture
def forward_rows(pipelines):
    """The rows of every forward pass of the batched pipeline's model during the test."""
    rows = []
    hook = pipelines[1].model.register_forward_hook(lambda module, args, output: rows.append(len(output.logits)))
    yield rows
    hook.remove()


def assert_same_results(got, expected) -> None:
    """The same structure, labels and label order; scores equal to float32 rounding (a text's logits
    differ in the last bits with the texts batched beside it)."""
    assert len(got) == len(expected)
    for mine, theirs in zip(got, expected, strict=True):
        mine, theirs = (mine, theirs) if isinstance(theirs, list) else ([mine], [theirs])
        assert [row["label"] for row in mine] == [row["label"] for row in theirs]
        assert all(type(row["score"]) is float for row in mine)
        assert max(abs(a["score"] - b["score"]) for a, b in zip(mine, theirs, strict=True)) < 2e-6


def test_load_classifier_gives_the_batched_pipeline(pipelines):
    stock, batched = pipelines
    assert type(stock) is TextClassificationPipeline
    assert isinstance(batched, BatchedTextClassificationPipeline) and isinstance(batched, TextClassificationPipeline)


@pytest.mark.parametrize(
    "options",
    [{}, {"top_k": None}, {"top_k": 1}, {"top_k": 2, "function_to_apply": "sigmoid"}, {"function_to_apply": "none"}],
)
def test_a_list_gets_the_stock_pipelines_results_in_batches(pipelines, mixed_texts, options, forward_rows):
    stock, batched = pipelines
    expected = stock(mixed_texts, **options)
    rows = forward_rows
    assert_same_results(batched(mixed_texts, **options), expected)
    # 103 texts (one empty, one of 400 characters, one holding [UNK]) in batches of 64 or fewer, not one by one
    assert sum(rows) == len(mixed_texts) and len(rows) < 10 and max(rows) <= 64
    rows.clear()
    assert_same_results(batched(mixed_texts, batch_size=5, **options), expected)
    assert max(rows) <= 5


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_scores_follow_the_problem_type_as_the_stock_pipeline(pipelines, mixed_texts, problem_type, monkeypatch):
    """Multi-label: sigmoid scores; regression: the logits themselves; each label's own, best first."""
    stock, batched = pipelines
    for classifier in pipelines:
        monkeypatch.setattr(classifier.model.config, "problem_type", problem_type)
    expected = stock(mixed_texts[:20], top_k=None)
    assert_same_results(batched(mixed_texts[:20], top_k=None), expected)
    if problem_type == "multi_label_classification":  # scores that do not sum to 1
        assert abs(sum(row["score"] for row in expected[0]) - 1) > 1e-3


@pytest.mark.parametrize("options", [{}, {"top_k": None}, {"top_k": 1}, {"function_to_apply": "none"}])
def test_one_text_gets_the_stock_pipelines_result_and_shape(pipelines, mixed_texts, options, forward_rows):
    """One text: a list of one result, or without the list when the call names top_k, as transformers' does."""
    stock, batched = pipelines
    for text in (mixed_texts[0], "", mixed_texts[-1]):
        got, expected = batched(text, **options), stock(text, **options)
        assert type(got) is list and len(got) == len(expected)
        assert [type(result) for result in got] == [type(result) for result in expected]
        assert_same_results(got, expected)
    assert forward_rows == [1, 1, 1]
    with pytest.raises(ArgumentError, match="num_proc labels a list of texts, not one text"):
        batched(mixed_texts[0], num_proc=2, **options)


def test_other_inputs_take_the_stock_path(pipelines, mixed_texts, forward_rows):
    stock, batched = pipelines
    rows = forward_rows
    assert_same_results(
        batched(mixed_texts[:3], truncation=True, max_length=4), stock(mixed_texts[:3], truncation=True, max_length=4)
    )
    assert_same_results(batched(mixed_texts[0], truncation=True), stock(mixed_texts[0], truncation=True))
    assert rows == [1, 1, 1, 1]  # text by text: tokenizer arguments are the stock pipeline's
    with pytest.raises(ArgumentError, match="num_proc labels a list of texts, without tokenizer arguments"):
        batched(mixed_texts[:2], num_proc=2, truncation=True)


def test_forked_processes_give_what_one_gives(pipelines, mixed_texts, monkeypatch):
    _, batched = pipelines
    texts = [text + "！" * (i % 3) for i, text in enumerate(mixed_texts * 3)]
    monkeypatch.setattr(batched, "piece_rows", 50)  # 309 texts: 7 pieces for 2 processes
    expected = batched(texts, top_k=None)
    assert_same_results(batched(texts, top_k=None, num_proc=2), expected)
    with pytest.raises(ArgumentError, match="^num_proc must be a positive integer, got 0$"):
        batched(texts, num_proc=0)
