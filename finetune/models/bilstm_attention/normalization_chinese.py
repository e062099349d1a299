"""Character normalisation of Chinese text before segmentation: traditional -> simplified characters
and full-width -> half-width letters and digits, one character table applied with `str.translate`.

The table is built once from OpenCC's conversion data (`finetune.data.normalization`, at
training time) and saved with the tokenizer as `char_map.json`; this file only applies it, so it
travels to the Hub as custom code (it imports nothing) and `JiebaTokenizer`, `OnnxClassifier` and
a user without finetune all read the text the model was trained on.
"""

import json

CHAR_MAP_FILE = "char_map.json"
IDEOGRAPHIC_SPACE = "\u3000"


def fullwidth_to_halfwidth_map() -> dict[str, str]:
    """Full-width digits and Latin letters (０-９, Ａ-Ｚ, ａ-ｚ) and the ideographic space -> ASCII.

    Full-width punctuation (，！？：；（）) is kept: it is how Chinese is written, the segmenter and
    the vocabulary know it in that form, and NFKC's ASCII comma would merge it with the English one.
    """
    ranges = [(0xFF10, 0xFF19), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A)]
    mapping = {chr(code): chr(code - 0xFEE0) for low, high in ranges for code in range(low, high + 1)}
    mapping[IDEOGRAPHIC_SPACE] = " "
    return mapping


class CharNormalizer:
    """Replaces characters one for one as `char_map` says (`{"們": "们", "Ａ": "A"}`)."""

    def __init__(self, char_map: dict[str, str]):
        self.char_map = dict(char_map)
        self._table = str.maketrans(self.char_map)

    @classmethod
    def from_file(cls, path: str) -> "CharNormalizer":
        with open(path, encoding="utf-8") as file:
            return cls(json.load(file))

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(self.char_map, file, ensure_ascii=False, sort_keys=True, indent=0)

    def __call__(self, text: str) -> str:
        return text.translate(self._table)
