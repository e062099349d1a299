"""Print a run's metrics.json as a markdown table.

python scripts/show_metrics.py outputs/word2vec_bilstm_attn/metrics.json
"""

import json
import sys


def main(path: str) -> None:
    metrics = json.loads(open(path, encoding="utf-8").read())
    print(f"\n{path}\n")
    print("| split | examples | accuracy | macro-F1 |")
    print("|---|---:|---:|---:|")
    for split in ("validation", "test"):
        if f"{split}_accuracy" in metrics:
            print(
                f"| {split} | {metrics[f'{split}_num_examples']} | {metrics[f'{split}_accuracy']:.4f} "
                f"| {metrics[f'{split}_macro_f1']:.4f} |"
            )
    split = "test" if "test_per_class" in metrics else "validation"
    print(f"\n| {split} label | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|")
    for label, row in metrics[f"{split}_per_class"].items():
        print(f"| {label} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    print(
        f"\ntraining: {metrics['train_steps']} steps in {metrics['train_runtime_s']:.0f} s "
        f"({metrics['train_samples_per_second']:.0f} samples/s); best at epoch {metrics['best_epoch'] + 1}\n"
    )


if __name__ == "__main__":
    main(sys.argv[1])
