"""How the labels are distributed over the splits (the training loss that answers an imbalance is
`finetune.training.losses.training_loss`): the counts are logged, written to metrics.json and shown on the
model card, so a reader sees at once whether macro-F1 and accuracy can be far apart."""

import logging
from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)


def class_counts(labels: Iterable, num_labels: int) -> list[int]:
    """Examples per label id; a multi-label example (a list of ids, or the 0/1 floats of a multi-hot
    vector as `load_data` encodes it) counts once for each of its labels."""
    counts = [0] * num_labels
    for label in labels:
        if not isinstance(label, (list, tuple)):
            label = (label,)
        elif any(isinstance(value, float) for value in label):  # multi-hot
            label = [i for i, value in enumerate(label) if value]
        for label_id in label:
            counts[int(label_id)] += 1
    return counts


def class_distribution(splits: Mapping, id2label: Mapping) -> dict:
    """{split: {label: {"count", "share"}}} for every split (share: of the split's texts).

    Args:
        splits: Datasets with a "label" column of ids (or lists of ids), e.g. `load_data`'s splits.
        id2label: Label names by id.
    """
    names = [id2label[i] for i in range(len(id2label))]
    distribution = {}
    for split, dataset in splits.items():
        counts = class_counts(dataset["label"], len(names))
        rows = max(len(dataset), 1)
        distribution[split] = {name: {"count": n, "share": n / rows} for name, n in zip(names, counts, strict=True)}
    return distribution


def log_class_distribution(distribution: dict) -> None:
    """One log line per split: `train: negative 1,234 (10.0%), positive 11,106 (90.0%)`."""
    for split, labels in distribution.items():
        parts = ", ".join(f"{name} {row['count']:,} ({row['share']:.1%})" for name, row in labels.items())
        logger.info("class distribution, %s: %s", split, parts)
