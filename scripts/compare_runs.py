"""Compare fine-tuning runs (and the pretraining behind them) in one markdown table.

    python scripts/compare_runs.py outputs/word2vec_bilstm_attn outputs/bilm_frozen outputs/bert_tuned ...

Each argument is a run directory of `recipes/train_bilstm_attention.py`; for pretrained encoders
the encoder's own `metrics.json` (validation perplexity, pretraining time) is read too.
"""

import json
import sys
from pathlib import Path

import yaml


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def describe(run: Path) -> list[str]:
    metrics = read_json(run / "metrics.json")
    config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    encoder = config["encoder_type"]
    pretraining = "word2vec (cached)" if encoder == "word_vectors" else "-"
    if encoder != "word_vectors":
        pretrained = read_json(Path(config["encoder_name_or_path"]) / "metrics.json")
        if pretrained:
            pretraining = (
                f"{pretrained['train_runtime_s'] / 60:.0f} min, ppl {pretrained['best_validation_perplexity']:.0f}"
            )
    frozen = "frozen" if config.get("freeze_encoder") else "fine-tuned"
    return [
        run.name,
        encoder,
        pretraining,
        frozen if encoder != "word_vectors" else ("frozen" if config["freeze_embeddings"] else "fine-tuned"),
        f"{metrics['test_accuracy']:.4f}",
        f"{metrics['test_macro_f1']:.4f}",
        f"{metrics['train_samples_per_second']:.0f}",
        f"{metrics['train_runtime_s'] / 60:.1f} min, {metrics['train_steps']} steps",
    ]


def main(runs: list[str]) -> None:
    header = ["run", "encoder", "pretraining", "encoder weights", "test acc", "test macro-F1",
              "train samples/s", "fine-tuning time"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for run in runs:
        print("| " + " | ".join(describe(Path(run))) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
