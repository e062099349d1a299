"""`pipeline("text-classification")` for lists of texts at `finetune predict`'s speed.

transformers' `TextClassificationPipeline` handles a list text by text: it tokenizes each alone, pads
`batch_size` of them in the order given, runs the model and turns each row back into Python objects
alone. On the toolkit's BiLSTM that per-text Python costs more than the model: 1,224 texts/s on 2
cores where a plain PyTorch loop labels 3,197, and 3,309 this way (README, "Speed"). `BatchedTextClassificationPipeline`
is that pipeline with one change: a list of plain texts is tokenized at once and run in batches of
similar length (`predict_logits`, as `finetune predict` runs it), and the scores become the same
`{"label", "score"}` results (the tests compare them with TextClassificationPipeline's). One text takes the
same path, as a list of one; everything else (text pairs, datasets, generators, tokenizer arguments) goes to
TextClassificationPipeline.

    pipeline("text-classification", model=RUN, pipeline_class=BatchedTextClassificationPipeline)

is what `finetune.inference.classifier.load_classifier` returns.
"""

import numpy as np
from transformers import TextClassificationPipeline
from transformers.pipelines.text_classification import ClassificationFunction, sigmoid, softmax

from finetune.errors import ArgumentError
from finetune.inference.text_scores import CHUNK_ROWS, label_scores, predict_logits
from finetune.processes import PIECE_ROWS, choose_num_proc, scores_in_processes

# The texts of a forward pass when the call names no batch_size (TextClassificationPipeline's default,
# 1, runs every text alone): the batch size `finetune predict` uses.
DEFAULT_BATCH_SIZE = 64
# What a call may pass and still take the batched path; tokenizer arguments go the per-text way.
BATCHED_OPTIONS = {"top_k", "function_to_apply", "batch_size", "num_workers"}


class BatchedTextClassificationPipeline(TextClassificationPipeline):
    """TextClassificationPipeline that labels a list of texts in length-sorted batches (module docstring)."""

    piece_rows = PIECE_ROWS  # texts a forked process labels at a time (`num_proc`)

    def __call__(self, inputs, **kwargs):
        """TextClassificationPipeline's call, and for a list of texts `num_proc`: label it in that many
        forked processes of one thread each, as `finetune predict` does (a CPU model, Linux; default 1)."""
        num_proc = kwargs.pop("num_proc", 1)
        one_text = isinstance(inputs, str)
        texts = [inputs] if one_text else inputs
        if not _plain_texts(texts) or not set(kwargs) <= BATCHED_OPTIONS or self._preprocess_params:
            if num_proc != 1:
                raise ArgumentError("num_proc labels a list of texts, without tokenizer arguments")
            return super().__call__(inputs, **kwargs)
        if one_text and num_proc != 1:
            raise ArgumentError("num_proc labels a list of texts, not one text")
        _, _, postprocess_params = self._sanitize_parameters(
            **{key: value for key, value in kwargs.items() if key in ("top_k", "function_to_apply")}
        )
        options = {**self._postprocess_params, **postprocess_params}
        batch_size = kwargs.get("batch_size") or self._batch_size or DEFAULT_BATCH_SIZE
        results = self._results(self._logits(texts, batch_size, num_proc), **options)
        if not one_text:
            return results
        # One text takes this path too (0.03-0.09 ms less than the stock path's 1.6-1.7 ms, measured), in
        # TextClassificationPipeline's shapes: a list of one result unless the call names top_k
        return results if "top_k" not in kwargs else results[0]

    def _logits(self, texts: list[str], batch_size: int, num_proc: int) -> np.ndarray:

        def score(piece: list[str], progress=None) -> np.ndarray:
            return predict_logits(self.model, self.tokenizer, piece, batch_size)

        on_cpu = self.model.device.type == "cpu"
        if choose_num_proc(num_proc, len(texts), on_cpu, several_launched=False, name="num_proc") == 1:
            # CHUNK_ROWS texts at a time, as `finetune predict` reads a file: memory stays flat on any list
            return np.concatenate(
                [score(texts[start : start + CHUNK_ROWS]) for start in range(0, len(texts), CHUNK_ROWS)]
            )

        def texts_of(start: int, stop: int) -> list[str]:
            return texts[start:stop]

        pieces = scores_in_processes(score, texts_of, len(texts), num_proc, self.piece_rows, name="num_proc")
        return np.concatenate([logits for _, logits in pieces])

    def _results(self, logits: np.ndarray, function_to_apply=None, top_k=1, _legacy=True) -> list:
        """`postprocess` of every row at once: the same labels, scores and order."""
        scores = _scores(logits, function_to_apply, self.model.config)
        id2label = self.model.config.id2label
        if top_k == 1 and _legacy:
            best = scores.argmax(-1)
            return [{"label": id2label[int(i)], "score": float(row[i])} for i, row in zip(best, scores)]
        if _legacy:  # every label in id order (TextClassificationPipeline's own legacy case)
            order = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
        else:  # best first; sorted(reverse=True) keeps tied labels in id order, as this stable sort does
            order = np.argsort(-scores, axis=-1, kind="stable")[:, :top_k]
        return [
            [{"label": id2label[i], "score": row[i]} for i in ranked]
            for row, ranked in zip(scores.tolist(), order.tolist())
        ]


def _scores(logits: np.ndarray, function: ClassificationFunction | None, config) -> np.ndarray:
    """`function_to_apply` on the logits; None: what the config's problem type asks, as `postprocess` chooses."""

    if function is None:
        return label_scores(logits, config)
    if function == ClassificationFunction.SIGMOID:
        return sigmoid(logits)
    if function == ClassificationFunction.SOFTMAX:
        return softmax(logits)
    if function == ClassificationFunction.NONE:
        return logits
    raise ValueError(f"Unrecognized `function_to_apply` argument: {function}")


def _plain_texts(inputs) -> bool:
    """A non-empty list of strings: what the batched path takes (pairs come as dicts)."""
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(text, str) for text in inputs)
