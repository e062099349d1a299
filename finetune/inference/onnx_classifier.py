"""Serve an exported model (`finetune export`) with onnxruntime: no torch, no transformers.

    from finetune.inference.onnx_classifier import OnnxClassifier

    classifier = OnnxClassifier("runs/reviews/onnx")                  # or model_int8.onnx: quantized=True
    classifier("物流很快，包装也很好")                                   # [{"label": "positive", "score": 0.97}]
    classifier(["很好", "很差"], top_k=None)                             # every label's score, best first

It needs onnxruntime, numpy and the segmenter (`rjieba`/`jieba` for word-level models; the
`tokenizers` library reads `tokenizer.json` for a transformer's or biLM's character vocabulary).
Texts become ids through the same code as `JiebaTokenizer` (`segmentation_jieba.JiebaVocabulary`)
or the same Rust tokenizer as the PyTorch path, and are cut where that path cuts them.
"""

import json
import os
from pathlib import Path

import numpy as np

from finetune.errors import ModelDirectoryError
from finetune.inference.batching import length_sorted_batches, padded_batch
from finetune.model_files import resolve_model_directory
from finetune.models.bilstm_attention.long_text import LongText
from finetune.models.bilstm_attention.normalization_chinese import CHAR_MAP_FILE, CharNormalizer
from finetune.models.bilstm_attention.segmentation_jieba import JiebaVocabulary, check_texts, load_segmenter, read_vocab
from finetune.models.bilstm_attention.tfidf_ngrams import NGRAM_FILE, NgramRows, TfidfNgrams

ONNX_DIR = "onnx"
MODEL_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
_LEGACY = object()  # `top_k` not given: the pipeline's one-best output shape


def find_onnx_directory(path: str | os.PathLike) -> Path:
    """The exported folder: `path` itself when it holds model.onnx, else `path/onnx` (a run directory of the
    earlier layout: `path/best/onnx`)."""
    path = Path(resolve_model_directory(path))
    for directory in (path, path / ONNX_DIR):
        if (directory / MODEL_FILE).is_file():
            return directory
    raise ModelDirectoryError(f"{path}: no {ONNX_DIR}/{MODEL_FILE}; run `finetune export {path}` first")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelDirectoryError(f"{path} is missing; export the model again (finetune export)")
    return json.loads(path.read_text(encoding="utf-8"))


def _char_map(directory: Path, settings: dict) -> dict | None:
    """The tokenizer's `char_map.json` (traditional -> simplified, full-width -> half-width), if it has one."""
    path = directory / CHAR_MAP_FILE
    if path.is_file():
        return CharNormalizer.from_file(str(path)).char_map
    if settings.get("traditional_to_simplified") or settings.get("fullwidth_to_halfwidth"):
        raise ModelDirectoryError(f"{path} is missing: the tokenizer was saved normalising characters")
    return None


class _JiebaIds:
    """Word ids as `JiebaTokenizer` gives them (its settings from tokenizer_config.json)."""

    def __init__(self, directory: Path, settings: dict):
        user_dict = directory / "user_dict.txt"
        if settings.get("user_dict_required") and not user_dict.is_file():
            raise ModelDirectoryError(f"{user_dict} is missing: the tokenizer was saved with a user dictionary")
        vocab = directory / "vocab.txt"
        if not vocab.is_file():
            raise ModelDirectoryError(f"{vocab} is missing; export the model again (finetune export)")
        tokens = read_vocab(str(vocab))
        added = {entry["content"]: int(i) for i, entry in settings.get("added_tokens_decoder", {}).items()}
        self.vocabulary = JiebaVocabulary(
            tokens,
            load_segmenter(settings.get("segmenter", "rjieba"), str(user_dict) if user_dict.is_file() else None),
            do_lower_case=settings.get("do_lower_case", True),
            split_unknown_words=settings.get("split_unknown_words", True),
            unk_token=settings.get("unk_token", "[UNK]"),
            added_tokens=added,
            char_map=_char_map(directory, settings),
        )
        # pipeline() calls JiebaTokenizer without arguments: it cuts to model_max_length.
        self.max_length = settings.get("model_max_length")
        self.truncation_side = settings.get("truncation_side", "right")
        self.tfidf = None  # a TF-IDF branch's n-grams, as JiebaTokenizer reads them
        if settings.get("tfidf_required"):
            if not (directory / NGRAM_FILE).is_file():
                raise ModelDirectoryError(f"{directory / NGRAM_FILE} is missing: the model has a TF-IDF branch")
            self.tfidf = TfidfNgrams.from_file(str(directory / NGRAM_FILE))

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return self.vocabulary.encode(texts, self.max_length, self.truncation_side)

    def ngram_rows(self, texts: list[str]) -> NgramRows | None:
        """The texts' `ngram_ids` and `ngram_weights` (`NgramRows`); None without a TF-IDF branch."""
        if self.tfidf is None:
            return None
        return self.tfidf.batch_rows([self.vocabulary.normalized(text) for text in texts])


class _RustTokenizerIds:
    """Ids from `tokenizer.json` (a BERT-style vocabulary), the library transformers itself runs."""

    def __init__(self, directory: Path):
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelDirectoryError(f"{path} is missing; export the model again (finetune export)")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()  # pipeline() does not truncate here; the model keeps max_length
        self.tokenizer.no_padding()

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def ngram_rows(self, texts: list[str]) -> None:
        return None  # no TF-IDF branch over these tokenizers


def _scores(logits: np.ndarray, config: dict) -> np.ndarray:
    """The scores `pipeline()` reports: softmax, sigmoid (multi-label or one label) or the logits (regression)."""
    if config.get("problem_type") == "regression":
        return logits
    if config.get("problem_type") == "multi_label_classification" or len(config["id2label"]) == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


class OnnxClassifier:
    """A text classifier over an exported folder, called as `pipeline("text-classification")` is.

    Args:
        path: The exported folder (`MODEL_DIR/onnx`) or the model directory that holds it.
        quantized: Run `model_int8.onnx` (`finetune export --quantize int8`) instead of `model.onnx`.
        threads: onnxruntime's intra-op threads; None: its default (every core).
        batch_size: Texts per run (texts of similar length go together). onnxruntime's LSTM is fastest
            on small batches: the 1,736 demo test texts ran in 0.65 s in batches of 32, 1.0 s in batches
            of 256 (int8, one thread).
    """

    def __init__(
        self, path: str | os.PathLike, *, quantized: bool = False, threads: int | None = None, batch_size: int = 32
    ):
        import onnxruntime as ort

        directory = find_onnx_directory(path)
        model_file = directory / (INT8_FILE if quantized else MODEL_FILE)
        if not model_file.is_file():
            raise ModelDirectoryError(f"{model_file} is missing; run `finetune export {path} --quantize int8`")
        self.config = _read_json(directory / "config.json")
        settings = _read_json(directory / "tokenizer_config.json")
        if settings.get("tokenizer_class") == "JiebaTokenizer":
            self.encode = _JiebaIds(directory, settings)
        else:
            self.encode = _RustTokenizerIds(directory)
        self.labels = [self.config["id2label"][str(i)] for i in range(len(self.config["id2label"]))]
        # Multi-label: a label is predicted where its score reaches its threshold (tuned on validation)
        saved = self.config.get("label_thresholds") or {}
        self.thresholds = None
        if self.config.get("problem_type") == "multi_label_classification":
            self.thresholds = np.asarray([float(saved.get(label, 0.5)) for label in self.labels])
        self.long_text = LongText.of(self.config)
        self.pad_token_id = self.config.get("pad_token_id") or 0
        self.padding_side = settings.get("padding_side", "right")
        self.batch_size = batch_size
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])

    def scores(self, texts: list[str], progress=None) -> np.ndarray:
        """Every label's score for each text, one row per text in label order (`pipeline(top_k=None)`'s numbers)."""
        check_texts(texts)
        # The model cuts long texts as its config says (and so does the graph): cutting here saves the work.
        encoded = [self.long_text.truncate(ids) for ids in self.encode(list(texts))]
        ngrams = self.encode.ngram_rows(list(texts))
        logits = np.empty((len(encoded), len(self.labels)), dtype=np.float32)
        for rows in length_sorted_batches([len(ids) for ids in encoded], self.batch_size):
            input_ids, attention_mask = padded_batch([encoded[i] for i in rows], self.pad_token_id, self.padding_side)
            if input_ids.shape[1] == 0:  # only empty texts: one masked step, as the model gives itself
                input_ids = np.full((len(rows), 1), self.pad_token_id, dtype=np.int64)
                attention_mask = np.zeros_like(input_ids)
            feed = {"input_ids": input_ids, "attention_mask": attention_mask}
            if ngrams is not None:
                ids, weights = ngrams.padded(rows)
                feed |= {"ngram_ids": ids, "ngram_weights": weights}
            logits[rows] = self.session.run(["logits"], feed)[0]
            if progress is not None:
                progress.update(len(rows))
        return _scores(logits, self.config)

    def __call__(self, inputs: str | list[str], top_k=_LEGACY) -> list:
        """Labels and scores as `pipeline()` gives them.

        Args:
            inputs: A text or a list of texts.
            top_k: Not given: each text's best label as `{"label", "score"}` (a list of one for one
                text); K: the K best labels of each text, best first; None: every label.
        """
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs)
        results = []
        for row in self.scores(texts):
            order = np.argsort(-row, kind="stable")
            best = [{"label": self.labels[i], "score": float(row[i])} for i in order]
            if top_k is _LEGACY:
                results.append(best[0])
            else:
                results.append(best if top_k is None else best[:top_k])
        if single and top_k is not _LEGACY:
            return results[0]
        return results
