"""Texts longer than the model's `max_length`: which tokens a cut keeps, and the windows that cover a text.

The settings live in the model's config.json (`long_text`, `truncation`, `truncation_head_ratio`,
`doc_stride`, `max_windows`, `window_aggregation`, `prefix_special_tokens`, `suffix_special_tokens`),
so the model's `forward`, the training data (`finetune/data/features.py`) and the onnxruntime classifier cut
alike. This file is plain Python (no torch: the onnxruntime classifier imports it); the model applies
the same rules to padded batches of tensors (`modeling_bilstm_attention.py`), and tests hold the two
to the same tokens. It travels to the Hub as custom code.
"""

from collections.abc import Mapping
from dataclasses import dataclass

LONG_TEXT_MODES = ("truncate", "windows")
TRUNCATIONS = ("head", "tail", "head+tail")
WINDOW_AGGREGATIONS = ("mean", "max")
# Sun et al. (2019), "How to Fine-Tune BERT for Text Classification?": of 510 tokens, the first 128
# and the last 382 did best on long reviews (IMDb, Sogou). A ratio, so that it scales to any length.
HEAD_RATIO = 0.25


@dataclass(frozen=True)
class LongText:
    """How a text longer than `max_length` tokens (special tokens included) reaches the model.

    Args:
        max_length: Tokens the encoder sees at once: the cut, or the window.
        mode: `"truncate"`: one cut of `max_length` tokens; `"windows"`: overlapping windows of
            `max_length` tokens, each scored, their scores aggregated per text.
        truncation: Which tokens a cut keeps: the `"head"`, the `"tail"`, or `"head+tail"`.
        head_ratio: `"head+tail"`: the share of the kept text tokens taken from the head.
        doc_stride: `"windows"`: text tokens two consecutive windows share (the `stride` of
            transformers' tokenizers, run_qa's `--doc_stride`).
        max_windows: `"windows"`: most windows per text (memory stays bounded); beyond them a text is cut.
        aggregation: `"windows"`: `"mean"` of the windows' probabilities, or their `"max"` per label.
        prefix: Special tokens the tokenizer puts before a text (BERT's [CLS]: 1), kept in every cut and window.
        suffix: Special tokens after it (BERT's [SEP]: 1), kept likewise.
    """

    max_length: int
    mode: str = "truncate"
    truncation: str = "head"
    head_ratio: float = HEAD_RATIO
    doc_stride: int = 0
    max_windows: int = 1
    aggregation: str = "mean"
    prefix: int = 0
    suffix: int = 0

    @classmethod
    def of(cls, config) -> "LongText":
        """The settings of a model config (a `PreTrainedConfig` or config.json's dict; older configs: head)."""
        get = config.get if isinstance(config, Mapping) else lambda key, default: getattr(config, key, default)
        return cls(
            max_length=get("max_length", 256),
            mode=get("long_text", "truncate"),
            truncation=get("truncation", "head"),
            head_ratio=get("truncation_head_ratio", HEAD_RATIO),
            doc_stride=get("doc_stride", 0),
            max_windows=get("max_windows", 1),
            aggregation=get("window_aggregation", "mean"),
            prefix=get("prefix_special_tokens", 0),
            suffix=get("suffix_special_tokens", 0),
        )

    def problems(self) -> dict[str, str]:
        """Config key -> what its value must be, for the values that are wrong (empty: all are right)."""
        wanted = {
            "long_text": self.mode not in LONG_TEXT_MODES and f"one of {', '.join(LONG_TEXT_MODES)}",
            "truncation": self.truncation not in TRUNCATIONS and f"one of {', '.join(TRUNCATIONS)}",
            "truncation_head_ratio": not 0 <= self.head_ratio <= 1 and "between 0 and 1",
            "max_length": self.content < 1 and f"above the {self.prefix + self.suffix} special tokens of a text",
            "window_aggregation": self.aggregation not in WINDOW_AGGREGATIONS
            and f"one of {', '.join(WINDOW_AGGREGATIONS)}",
        }
        if self.mode == "windows":
            wanted["doc_stride"] = not 0 <= self.doc_stride < self.content and (
                f"0 or more and below the {self.content} text tokens of a window"
            )
            wanted["max_windows"] = self.max_windows < 1 and "at least 1"
        return {key: value for key, value in wanted.items() if value}

    @property
    def content(self) -> int:
        """Text tokens in a cut or a window (special tokens aside)."""
        return self.max_length - self.prefix - self.suffix

    @property
    def head_tokens(self) -> int:
        """Text tokens a cut keeps from the head (the rest come from the tail)."""
        if self.truncation == "head":
            return self.content
        if self.truncation == "tail":
            return 0
        return int(self.content * self.head_ratio + 0.5)

    @property
    def step(self) -> int:
        """Text tokens from one window's start to the next one's."""
        return self.content - self.doc_stride

    @property
    def input_limit(self) -> int:
        """Tokens (special tokens included) the windows of a text cover at most."""
        return self.max_length + (self.max_windows - 1) * self.step

    def truncate(self, ids: list) -> list:
        """The `max_length` ids a cut keeps: the special tokens, and the head, the tail or both of the text."""
        if len(ids) <= self.max_length:
            return list(ids)
        cut = self.prefix + self.head_tokens
        return list(ids[:cut]) + list(ids[len(ids) - (self.max_length - cut) :])

    def window_starts(self, length: int) -> list[int]:
        """Where each window starts among the text tokens of a text of `length` ids (special tokens included)."""
        text_tokens = max(length - self.prefix - self.suffix, 0)
        starts = [0]
        while starts[-1] + self.content < text_tokens and len(starts) < self.max_windows:
            starts.append(starts[-1] + self.step)
        return starts

    def windows(self, ids: list) -> list[list]:
        """The windows of a text's ids, each with the text's special tokens around its text tokens."""
        ids = list(ids)
        end = max(len(ids) - self.suffix, self.prefix)
        before, text, after = ids[: self.prefix], ids[self.prefix : end], ids[end:]
        return [before + text[start : start + self.content] + after for start in self.window_starts(len(ids))]
