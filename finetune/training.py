"""Parts of the accelerate training loop that every recipe shares."""

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

NO_DECAY = ("bias", "embeddings", "norm")


def create_optimizer(model: nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not biases, norms or embedding tables).

    Frozen parameters are left out, so freezing needs no special case in the optimizer.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if any(key in name.lower() for key in NO_DECAY) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class EarlyStopping:
    """Tracks the best value of a metric where higher is better; says when patience runs out."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -float("inf")
        self.bad_evaluations = 0

    def update(self, value: float) -> bool:
        """Records `value`; returns True when it is a new best."""
        if value > self.best:
            self.best, self.bad_evaluations = value, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evaluations >= self.patience


def predict(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and labels of every example exactly once (across processes), and the mean loss."""
    model.eval()
    probabilities, labels, losses = [], [], []
    with torch.no_grad():
        for batch in loader:
            outputs = model(**batch)
            probs, refs, loss = accelerator.gather_for_metrics(
                (outputs.logits.float().softmax(-1), batch["labels"], outputs.loss.detach().repeat(len(batch["labels"])))
            )
            probabilities.append(probs.cpu())
            labels.append(refs.cpu())
            losses.append(loss.cpu())
    model.train()
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy(), float(torch.cat(losses).mean())


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Writes JSON to a temporary file beside `path`, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
    os.replace(f.name, path)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Writes text to a temporary file beside `path`, then renames it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8") as f:
        f.write(text)
    os.replace(f.name, path)


def save_pretrained_atomic(model, tokenizer, directory: str | os.PathLike) -> None:
    """`save_pretrained` into a temporary sibling directory, then swap it in.

    A kill during the save leaves the previous `directory` whole: readers never see half a model.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if directory.exists():
        retired = directory.with_name(f".{directory.name}-old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(directory, retired)
        os.replace(staging, directory)
        shutil.rmtree(retired)
    else:
        os.replace(staging, directory)
