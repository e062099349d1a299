"""Text to word ids without torch or transformers: segmentation, vocabulary lookup, truncation.

`JiebaTokenizer` (the `PreTrainedTokenizer`) encodes through `JiebaVocabulary`, and so does
`finetune.inference.onnx_classifier.OnnxClassifier`, which serves an exported model with onnxruntime alone:
one implementation, so both give the same ids. This file travels to the Hub with the tokenizer
(a relative import of `tokenization_jieba.py`); it imports only the segmenter.
"""

import re

from .normalization_chinese import CharNormalizer


def load_segmenter(name: str, user_dict_file: str | None = None):
    """Returns `cut(text) -> list[str]` for `name` in {"rjieba", "jieba", "char"}, with the user dictionary loaded.

    `"char"` reads text as characters (no word segmentation): a small vocabulary, no
    segmentation errors, longer sequences.

    The user dictionary uses jieba's format: one `word [freq] [tag]` per line.
    """
    entries = []
    if user_dict_file:
        with open(user_dict_file, encoding="utf-8-sig") as f:
            entries = [line.split() for line in f if line.strip()]
    if name == "char":
        return list
    if name == "rjieba":
        import rjieba

        segmenter = rjieba.Jieba()
        for word, *rest in entries:
            freq = int(rest[0]) if rest and rest[0].isdigit() else None
            segmenter.add_word(word, freq, None)
        return segmenter.cut
    if name == "jieba":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        segmenter = jieba.Tokenizer()
        for word, *rest in entries:
            freq = int(rest[0]) if rest and rest[0].isdigit() else None
            segmenter.add_word(word, freq)
        return segmenter.lcut
    raise ValueError(f"segmenter must be 'rjieba', 'jieba' or 'char', got {name!r}")


def describe(value) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r}"[:80]


def check_texts(text) -> None:
    """Raises a `TypeError` naming the item when `text` is not a string, nor a list of strings (or ids).

    Lists of strings (pretokenized words) and of ints (ids) pass: transformers accepts both.
    """
    if isinstance(text, str):
        return
    if not isinstance(text, (list, tuple)):
        raise TypeError(f"text is {describe(text)}, expected a string or a list of strings")
    for index, item in enumerate(text):
        if not isinstance(item, (str, int, list, tuple)) or isinstance(item, bool):
            raise TypeError(f"text {index} is {describe(item)}, expected a string")


def read_vocab(path: str) -> list[str]:
    """The tokens of a vocabulary file, one a line; a token's id is its line number (from 0)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def truncate(ids: list[int], max_length: int | None, side: str = "right") -> list[int]:
    """The first (`side="right"`) or last `max_length` ids; all of them for None."""
    if not max_length or len(ids) <= max_length:
        return ids
    return ids[:max_length] if side == "right" else ids[-max_length:]


class JiebaVocabulary:
    """Segments text with jieba and maps the words to ids, as `JiebaTokenizer` does.

    Args:
        tokens: The vocabulary; a token's id is its position.
        cut: The segmenter (`load_segmenter`).
        do_lower_case: Lowercase before segmenting.
        char_map: Characters replaced before segmenting (traditional -> simplified, full-width ->
            half-width; `normalization_chinese`); None: none.
        split_unknown_words: A word missing from the vocabulary is read as its characters.
        unk_token: The token of words (and characters) without an id.
        added_tokens: Tokens kept whole where a text holds them (`[UNK]`, `[PAD]`), with their ids.
    """

    def __init__(
        self,
        tokens: list[str],
        cut,
        *,
        do_lower_case: bool = True,
        split_unknown_words: bool = True,
        unk_token: str = "[UNK]",
        added_tokens: dict[str, int] | None = None,
        char_map: dict[str, str] | None = None,
    ):
        self.ids = {token: index for index, token in enumerate(tokens)}
        self.normalize = CharNormalizer(char_map) if char_map else None
        self.cut = cut
        self.do_lower_case = do_lower_case
        self.split_unknown_words = split_unknown_words
        self.unk_id = self.ids[unk_token]
        self.set_added_tokens(added_tokens or {})

    def set_added_tokens(self, added_tokens: dict[str, int]) -> None:
        """Tokens a text may hold literally, matched longest first, as transformers' trie matches them."""
        self.added_tokens = dict(added_tokens)
        ordered = sorted(self.added_tokens, key=len, reverse=True)
        self._added_pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # An added token whose id differs from the vocabulary's is looked up as transformers does.
        clash = any(self.ids.get(token) != index for token, index in self.added_tokens.items())
        self._lookup = {**self.ids, **self.added_tokens} if clash else self.ids

    def segment(self, text: str) -> list[str]:
        """Words of `text` as the model sees them: normalised, lowercased, segmented, whitespace dropped."""
        return [word for word in self.cut(self.normalized(text)) if not word.isspace()]

    def normalized(self, text: str) -> str:
        """`text` as the segmenter reads it: characters mapped (`char_map`), lowercased."""
        if not isinstance(text, str):
            raise TypeError(f"text is {describe(text)}, expected a string")
        if self.normalize is not None:
            text = self.normalize(text)
        return text.lower() if self.do_lower_case else text

    def words_to_tokens(self, words: list[str]) -> list[str]:
        """Words to vocabulary tokens: unknown words become their characters when so configured."""
        if not self.split_unknown_words:
            return words
        tokens, vocab = [], self.ids
        for word in words:
            if word in vocab or len(word) == 1:
                tokens.append(word)
            else:
                tokens.extend(word)
        return tokens

    def text_ids(self, text: str, split_added_tokens: bool = False) -> list[int]:
        """Ids of a text; an added token written in it (`[UNK]`) keeps its id unless `split_added_tokens`."""
        lookup, unk_id = self._lookup, self.unk_id
        if split_added_tokens or self._added_pattern is None or not self._added_pattern.search(text):
            return [lookup.get(token, unk_id) for token in self.words_to_tokens(self.segment(text))]
        ids, start = [], 0
        for match in self._added_pattern.finditer(text):
            ids += self.text_ids(text[start : match.start()], split_added_tokens=True)
            ids.append(self.added_tokens[match.group()])
            start = match.end()
        return ids + self.text_ids(text[start:], split_added_tokens=True)

    def encode(
        self, texts: list[str], max_length: int | None = None, truncation_side: str = "right"
    ) -> list[list[int]]:
        """Each text's ids, cut to `max_length` (None: not cut)."""
        return [truncate(self.text_ids(text), max_length, truncation_side) for text in texts]
