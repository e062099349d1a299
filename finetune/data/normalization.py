"""Building the character table of `--traditional_to_simplified` / `--fullwidth_to_halfwidth`, and
putting it into a tokenizer so that every later reader of its files applies it.

- `JiebaTokenizer` (word vectors) gets the table as `char_map.json` next to `vocab.txt`
  (`normalization_chinese.CharNormalizer` applies it; the ONNX classifier shares that code).
- A `tokenizers`-backed tokenizer (a transformer's, the biLM's characters) gets it as
  `normalizers.Replace` rules ahead of its own normalizer, in `tokenizer.json`: no custom code.

The traditional -> simplified table comes from OpenCC (the `opencc` package, the project's official
wheel): each CJK character is converted alone and kept where it changes into one character. On
300 embedded reviews made traditional by OpenCC, the table gets 283 texts exactly back (21 of
22,611 characters differ: words like 乾/干 need OpenCC's phrase tables), OpenCC itself 295 (README
"Traditional characters and normalisation").
"""

import functools
import logging

from finetune.errors import ArgumentError
from finetune.models.bilstm_attention.normalization_chinese import fullwidth_to_halfwidth_map

logger = logging.getLogger(__name__)

# CJK Unified Ideographs, Extension A, and the compatibility ideographs
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF))


@functools.lru_cache(maxsize=1)
def traditional_to_simplified_map() -> dict[str, str]:
    """{traditional character: simplified character} from OpenCC's `t2s` conversion.

    Raises:
        ArgumentError: OpenCC is not installed.
    """
    try:
        import opencc
    except ImportError:
        raise ArgumentError("--traditional_to_simplified needs OpenCC: pip install opencc") from None
    converter = opencc.OpenCC("t2s.json")
    chars = [chr(code) for low, high in CJK_RANGES for code in range(low, high + 1)]
    converted = (converter.convert(char) for char in chars)
    return {char: simple for char, simple in zip(chars, converted, strict=True) if simple != char and len(simple) == 1}


def normalization_map(traditional_to_simplified: bool, fullwidth_to_halfwidth: bool) -> dict[str, str] | None:
    """The character table the flags ask for; None when both are off."""
    if not (traditional_to_simplified or fullwidth_to_halfwidth):
        return None
    mapping = {}
    if traditional_to_simplified:
        mapping.update(traditional_to_simplified_map())
    if fullwidth_to_halfwidth:
        mapping.update(fullwidth_to_halfwidth_map())
    return mapping


def normalize_fast_tokenizer(tokenizer, char_map: dict[str, str], **settings):
    """A `tokenizers`-backed tokenizer with `char_map` ahead of its own normalizer, as `normalizers.Replace`
    rules in `tokenizer.json`; `AutoTokenizer`, `pipeline()` and the ONNX classifier apply them, no
    custom code needed.

    It is returned as the generic `PreTrainedTokenizerFast` (saved as `TokenizersBackend`): a
    `BertTokenizer` rebuilds its normalizer from its own settings when it loads and would drop the
    rules. Only characters whose replacement the vocabulary knows get a rule (one that gives `[UNK]`
    anyway changes nothing); each rule is one pass over the text in Rust.

    Args:
        tokenizer: A checkpoint's tokenizer (a transformer's, the biLM's characters).
        char_map: `normalization_map`'s table.
        settings: Recorded in tokenizer_config.json (`traditional_to_simplified=True`...).

    Raises:
        ArgumentError: The tokenizer is not `tokenizers`-backed.
    """
    from tokenizers import normalizers
    from transformers import PreTrainedTokenizerFast

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ArgumentError(
            f"--traditional_to_simplified/--fullwidth_to_halfwidth: {type(tokenizer).__name__} has no "
            "tokenizer.json normalizer to carry the table"
        )
    vocab = tokenizer.get_vocab()
    rules = [
        normalizers.Replace(source, target)
        for source, target in char_map.items()
        if target in vocab or target.lower() in vocab or target.isspace()
    ]
    backend.normalizer = normalizers.Sequence([*rules, *([backend.normalizer] if backend.normalizer else [])])
    logger.info("tokenizer normaliser: %d character replacements ahead of the tokenizer's own", len(rules))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, **tokenizer.special_tokens_map, model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side, truncation_side=tokenizer.truncation_side, **settings,
    )  # fmt: skip
