"""Texts -> a classifier's logits and label scores, in length-sorted batches: the primitive that `finetune predict`,
`load_classifier`'s pipeline, distillation's teacher and the TF-IDF branch's checks share.
"""

import numpy as np
import torch
from transformers.pipelines.text_classification import sigmoid, softmax

from finetune.inference.batching import length_sorted_batches, padded_batch

# Rows tokenized, sorted by length, predicted and written at a time: sorting within a chunk this
# size leaves the batches almost free of padding, and memory stays flat on any file.
CHUNK_ROWS = 16384


def label_scores(logits: np.ndarray, config) -> np.ndarray:
    """Logits to the scores `pipeline()` reports: softmax, sigmoid (multi-label or one label) or none (regression)."""
    if config.problem_type == "regression":
        return logits
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return sigmoid(logits)
    return softmax(logits)


def predict_probabilities(
    model, tokenizer, texts: list[str], batch_size: int = 64, progress=None, max_length: int | None = None
) -> np.ndarray:
    """Label scores of `texts`, as `pipeline(texts, top_k=None)` gives them, one row per text in label order
    (`max_length`: cut to this many tokens, as `predict_logits`).

    The texts are tokenized at once, then run in batches of similar length (little padding) and
    returned in their own order.

    Args:
        model: A sequence classifier (in eval mode).
        tokenizer: Its tokenizer.
        texts: The texts.
        batch_size: Texts per forward pass (fewer for long texts).
        progress: A tqdm bar to advance by each batch's size.
    """
    return label_scores(predict_logits(model, tokenizer, texts, batch_size, progress, max_length), model.config)


@torch.inference_mode()
def predict_logits(
    model, tokenizer, texts: list[str], batch_size: int = 64, progress=None, max_length: int | None = None
) -> np.ndarray:
    """The model's logits (float32) for `texts`, in their order; as `predict_probabilities`, before the scores.
    `max_length`: texts are cut to this many tokens (None: as `pipeline()` calls the tokenizer, uncut)."""
    # A TF-IDF branch's n-grams (JiebaTokenizer's): as arrays, cut into padded batches without lists
    ngrams = tokenizer.ngram_rows(texts) if getattr(tokenizer, "tfidf", None) is not None else None
    options = {"return_ngrams": False} if ngrams is not None else {}
    if max_length is None:
        # as pipeline() calls it: no padding, the tokenizer's truncation; a text longer than the tokenizer's
        # model_max_length is cut by the model itself (config.json's long_text), so transformers' warning that it
        # "will result in indexing errors" is wrong here: not given
        encoding = tokenizer(texts, verbose=False, **options)
    else:
        encoding = tokenizer(texts, truncation=True, max_length=max_length, **options)
    encoded, names = encoding["input_ids"], ["input_ids", "attention_mask"]
    if ngrams is not None:
        names += ["ngram_ids", "ngram_weights"]
    logits = np.empty((len(texts), model.config.num_labels), dtype=np.float32)
    for rows in length_sorted_batches([len(ids) for ids in encoded], batch_size):
        batch = padded_batch([encoded[i] for i in rows], tokenizer.pad_token_id, tokenizer.padding_side)
        if ngrams is not None:
            batch += ngrams.padded(rows)
        outputs = model(**{name: torch.from_numpy(array).to(model.device) for name, array in zip(names, batch)})
        logits[rows] = outputs.logits.float().cpu().numpy()
        if progress is not None:
            progress.update(len(rows))
    return logits
