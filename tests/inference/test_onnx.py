"""ONNX export (`finetune.inference.export`) and the onnxruntime classifier (`finetune.inference.onnx_classifier`):
logits as PyTorch's for every encoder kind and a merged LoRA adapter, padding and over-long texts
included; the same ids as the PyTorch tokenizer; the classifier runs where torch and transformers
cannot be imported; the CLI."""

import copy
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import MAX_LENGTH, ROOT, make_reviews, pretrained_encoder_model, word_vector_model
from transformers import pipeline

from finetune.cli import main as cli
from finetune.inference.batching import padded_batch
from finetune.inference.export import export_onnx
from finetune.inference.onnx_classifier import OnnxClassifier

TEXTS = ["", "好", "这部电影很好。", "酒店太差劲了！服务很差，房间很脏，不推荐。" * 3, "[UNK]很好", "iPhone 很 GOOD"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_bert, tiny_e5, tiny_bilm):
    """{encoder kind: (saved model directory, model, tokenizer)}, each exported (fp32 and int8)."""
    built = {
        "word_vectors": word_vector_model(None),
        "transformer": pretrained_encoder_model("transformer", tiny_bert),
        "sentencepiece": pretrained_encoder_model("transformer", tiny_e5),  # laid out as multilingual-e5
        "bilm": pretrained_encoder_model("bilm", tiny_bilm),
        "tfidf_branch": with_tfidf_branch(*word_vector_model(None)),
    }
    saved = {}
    for kind, (model, tokenizer) in built.items():
        path = tmp_path_factory.mktemp(kind)
        model.eval().save_pretrained(path)
        tokenizer.save_pretrained(path)
        export_onnx(path, quantize="int8")
        saved[kind] = (path, model, tokenizer)
    return saved


def with_tfidf_branch(model, tokenizer):
    """The word-vector model with a TF-IDF branch fitted on templated reviews (mix weight 0.5)."""
    from finetune.training.tfidf_branch import attach_tfidf_branch

    def split(n, seed):
        rows = make_reviews(n, seed)
        return {"text": [text for text, _ in rows], "label": [int(label == "positive") for _, label in rows]}

    attach_tfidf_branch(model, tokenizer, {"train": split(30, 0), "validation": split(10, 1)}, "accuracy")
    return model, tokenizer


KINDS = ["word_vectors", "transformer", "sentencepiece", "bilm", "tfidf_branch"]


def mixed_batch(tokenizer):
    """Lengths 0, 1, short, exactly MAX_LENGTH and beyond it (not truncated: the graph cuts, as the model);
    with a TF-IDF branch, the n-grams of texts of the same lengths."""
    rows = [tokenizer(text, truncation=False, verbose=False)["input_ids"] for text in TEXTS[1:4]]
    long = rows[-1]
    assert len(long) > MAX_LENGTH + 3
    rows = [[], [long[0]], *rows[:2], long[:MAX_LENGTH], long]
    input_ids, attention_mask = padded_batch(rows, tokenizer.pad_token_id, tokenizer.padding_side)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if getattr(tokenizer, "tfidf", None) is not None:
        texts = ["", *TEXTS[1:4], TEXTS[3], TEXTS[3]]
        ids, weights = tokenizer.ngram_rows(texts).padded(np.arange(len(texts)))
        batch |= {"ngram_ids": ids, "ngram_weights": weights}
    return batch


def onnx_logits(directory, batch, file="model.onnx"):
    import onnxruntime as ort

    return ort.InferenceSession(str(directory / "onnx" / file)).run(["logits"], batch)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_exported_logits_equal_pytorch_on_padding_and_long_texts(models, kind):
    path, model, tokenizer = models[kind]
    batch = mixed_batch(tokenizer)
    with torch.no_grad():
        expected = model(**{key: torch.from_numpy(value) for key, value in batch.items()}).logits.numpy()
    np.testing.assert_allclose(onnx_logits(path, batch), expected, rtol=0, atol=1e-4)
    # Other batch sizes and widths through the same graph: the axes are dynamic.
    for rows in (slice(1, 2), slice(2, 6)):
        part = {key: value[rows, : batch["attention_mask"][rows].sum(1).max()] for key, value in batch.items()}
        np.testing.assert_allclose(onnx_logits(path, part), expected[rows], rtol=0, atol=1e-4)
    int8 = onnx_logits(path, batch, "model_int8.onnx")
    assert int8.shape == expected.shape and np.abs(int8 - expected).max() < 0.1
    files = sorted(p.name for p in (path / "onnx").iterdir())
    assert {"model.onnx", "model_int8.onnx", "config.json", "tokenizer_config.json", "export.json"} <= set(files)
    assert not any(name.endswith(".py") for name in files)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_classifier_gives_the_pipeline_ids_and_scores(models, kind):
    path, model, tokenizer = models[kind]
    classifier = OnnxClassifier(path)
    # pipeline() tokenizes one text at a time with no arguments; the model keeps MAX_LENGTH tokens.
    expected_ids = [tokenizer(text)["input_ids"][:MAX_LENGTH] for text in TEXTS]
    assert [ids[:MAX_LENGTH] for ids in classifier.encode(TEXTS)] == expected_ids
    reference = pipeline("text-classification", model=model, tokenizer=tokenizer)
    expected = reference(TEXTS, top_k=None)
    got = classifier(TEXTS, top_k=None)
    for got_row, want_row in zip(got, expected, strict=True):
        assert [row["label"] for row in got_row] == [row["label"] for row in want_row]
        assert [row["score"] for row in got_row] == pytest.approx([row["score"] for row in want_row], abs=1e-4)
    # The pipeline's shapes: one text or a list, with and without top_k.
    assert classifier(TEXTS[2]) == [got[2][0]]
    assert classifier(TEXTS[:2]) == [got[0][0], got[1][0]]
    assert classifier(TEXTS[2], top_k=1) == got[2][:1]


def test_lora_adapter_is_merged_before_export(models, tmp_path):
    from finetune.training.lora import LoraOptions, apply_lora

    _, original, tokenizer = models["transformer"]
    model = copy.deepcopy(original)  # peft wraps modules in place
    base = tmp_path / "base"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    adapted = apply_lora(model, LoraOptions(lora_r=4, lora_alpha=8, lora_dropout=0.0), base_path=base.resolve())
    torch.manual_seed(1)
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:  # zero at initialisation: make the adapter change the logits
            torch.nn.init.normal_(parameter, std=0.5)
    best = tmp_path / "best"
    adapted.save_pretrained(best)
    tokenizer.save_pretrained(best)
    export_onnx(best)
    batch = mixed_batch(tokenizer)
    with torch.no_grad():
        inputs = {key: torch.from_numpy(value) for key, value in batch.items()}
        expected = adapted.eval()(**inputs).logits.numpy()
        unadapted = original(**inputs).logits.numpy()
    np.testing.assert_allclose(onnx_logits(best, batch), expected, rtol=0, atol=1e-4)
    assert np.abs(unadapted - expected).max() > 1e-3


# sitecustomize on PYTHONPATH: torch and transformers cannot be imported in that interpreter.
BLOCKER = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ("torch", "transformers"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=top)

sys.meta_path.insert(0, Blocked())
"""
WITHOUT_TORCH = """
import json, sys
for name in ("torch", "transformers"):
    try:
        __import__(name)
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"{name} is importable")
from finetune.inference.onnx_classifier import OnnxClassifier

classifier = OnnxClassifier(sys.argv[1], quantized=sys.argv[2] == "int8")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("torch", "transformers"))
print(json.dumps({"scores": classifier(json.loads(sys.argv[3]), top_k=None), "loaded": loaded}))
"""


def test_onnx_classifier_runs_where_torch_and_transformers_are_missing(models, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER), encoding="utf-8")
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    for kind in ("word_vectors", "transformer"):
        path = models[kind][0]
        expected = OnnxClassifier(path, quantized=True)(TEXTS, top_k=None)
        result = subprocess.run(
            [sys.executable, "-c", WITHOUT_TORCH, str(path / "onnx"), "int8", json.dumps(TEXTS, ensure_ascii=False)],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        output = json.loads(result.stdout.strip().splitlines()[-1])
        assert output["loaded"] == []
        assert output["scores"] == expected


def test_cli_export_then_predict_with_onnx(models, tmp_path, capsys):
    path = models["word_vectors"][0]
    cli(["export", str(path), "--output", str(tmp_path), "--quantize", "int8", "--opset", "17"])
    assert "model_int8.onnx" in capsys.readouterr().out
    assert json.loads((tmp_path / "onnx" / "export.json").read_text(encoding="utf-8"))["opset"] == 17
    cli(["predict", str(tmp_path), "--text", "这部电影很好。", "--backend", "onnx", "--top_k", "all"])
    line = json.loads(capsys.readouterr().out.strip())
    expected = OnnxClassifier(path)("这部电影很好。", top_k=None)
    assert line["top_k"] == expected
    table = tmp_path / "texts.csv"
    table.write_text("text\n这部电影很好。\n好\n酒店太差劲了！\n", encoding="utf-8")
    cli(["predict", str(path), str(table), "--backend", "onnx_int8", "--output", str(tmp_path / "out.jsonl")])
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3 and all(row["predicted_label"] in ("negative", "positive") for row in rows)


def test_onnx_in_forked_processes_writes_what_one_writes(models, tmp_path):
    from finetune.data.tables import read_table
    from finetune.inference.file_labelling import predict_file

    texts = [text for text, _ in make_reviews(300, seed=5)] + TEXTS
    input_file = tmp_path / "in.jsonl"
    lines = (json.dumps({"id": i, "text": text}, ensure_ascii=False) + "\n" for i, text in enumerate(texts))
    input_file.write_text("".join(lines), encoding="utf-8")
    path = models["tfidf_branch"][0]
    predict_file(path, input_file, tmp_path / "one.jsonl", backend="onnx", top_k="all", num_proc=1)
    predict_file(path, input_file, tmp_path / "two.jsonl", backend="onnx", top_k="all", num_proc=2, chunk_size=40)
    one, two = (read_table(tmp_path / f"{name}.jsonl").to_pandas() for name in ("one", "two"))
    assert two["id"].tolist() == list(range(len(texts)))
    assert one["predicted_label"].fillna("").tolist() == two["predicted_label"].fillna("").tolist()
    assert one["predicted_label"].isna().tolist() == [text == "" for text in texts]  # the empty text: unlabelled
    scores = [name for name in one.columns if name.startswith("score")]
    assert np.allclose(one[scores].to_numpy(float), two[scores].to_numpy(float), rtol=0, atol=2e-6, equal_nan=True)


def test_push_uploads_the_onnx_folder_and_the_card_shows_onnxruntime(models, tmp_path):
    from hub_server import LocalHub, hub_env

    model_dir = shutil.copytree(models["word_vectors"][0], tmp_path / "run")
    with LocalHub() as hub:
        env = hub_env(hub, tmp_path / "home", "hf_onnx_test_token_0123")
        command = [sys.executable, "-c", "from finetune.cli import main; main()", "push", str(model_dir),
                   "--repo-id", "user/onnx"]  # fmt: skip
        result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        files = hub.files("user/onnx")
    assert {"onnx/model.onnx", "onnx/model_int8.onnx", "onnx/vocab.txt", "onnx/config.json"} <= set(files)
    card = files["README.md"].decode("utf-8")
    assert 'pipeline("text-classification", model="user/onnx", trust_remote_code=True)' in card
    assert 'OnnxClassifier(snapshot_download("user/onnx", allow_patterns=["onnx/*"]), quantized=True)' in card


@pytest.mark.parametrize(
    "argv, message",
    [
        (["export", "{missing}"], "no such model directory"),
        (["export", "{model}", "--opset", "9"], "--opset must be between 14 and 20"),
        (["export", "{model}", "--quantize", "int4"], "argument --quantize: invalid choice"),
        (["predict", "{missing}", "--text", "好", "--backend", "onnx"], "no onnx/model.onnx"),
    ],
)
def test_cli_errors_are_one_line(models, tmp_path, capsys, argv, message):
    names = {"missing": str(tmp_path / "nowhere"), "model": str(models["word_vectors"][0])}
    with pytest.raises(SystemExit) as exit_info:
        cli([arg.format(**names) for arg in argv])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("finetune: error: ") and message in error and "\n" not in error
