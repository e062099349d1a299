"""The code a user would otherwise run on a pretrained encoder: `AutoModelForSequenceClassification` + `Trainer`.

`TrainerClassifier` is a `Baseline` (see `baselines.py`) fine-tuning the checkpoint the recipe starts
from (`--model_name_or_path`, taken whole: no vocabulary trimming) with transformers' own classifier (a
linear layer on the first token's state; BERTs' pooler where the checkpoint has one) and the stock
`Trainer`: the recipe's epochs, learning rate, batch size, warm-up, weight decay, `--bf16` and
`max_seq_length`, everything else at transformers' defaults (dynamic padding by the tokenizer, random
batches: `group_by_length` off), evaluated on dev every epoch and the best epoch by dev macro-F1 kept.
What it measures beside the recipe: accuracy, and training samples per second (`selection`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence

import numpy as np

from finetune.errors import ArgumentError

logger = logging.getLogger(__name__)


class TrainerClassifier:
    """`AutoModelForSequenceClassification` fine-tuned by `transformers.Trainer`.

    Args:
        model_name_or_path: A Hub id or directory of an encoder checkpoint (its classification head is new).
        num_train_epochs, learning_rate, per_device_train_batch_size, per_device_eval_batch_size,
        warmup_ratio, weight_decay, bf16: `TrainingArguments`' fields of the same names.
        max_seq_length: Tokens kept of each text.
        seed: `TrainingArguments.seed` (the head's initialisation and the batches' order).
    """

    name = "trainer"
    title = "transformers Trainer, AutoModelForSequenceClassification"
    deterministic = False
    multi_label_capable = False
    needs_run_args = True  # built from the recipe's arguments (`from_run_args`), not from a seed alone

    def __init__(
        self,
        model_name_or_path: str | None = None,
        num_train_epochs: float = 3.0,
        learning_rate: float = 5e-5,
        per_device_train_batch_size: int = 32,
        per_device_eval_batch_size: int = 128,
        warmup_ratio: float = 0.1,
        weight_decay: float = 0.01,
        bf16: bool = False,
        max_seq_length: int = 128,
        seed: int = 42,
    ):
        self.model_name_or_path = model_name_or_path
        self.num_train_epochs, self.learning_rate = num_train_epochs, learning_rate
        self.per_device_train_batch_size = per_device_train_batch_size
        self.per_device_eval_batch_size = per_device_eval_batch_size
        self.warmup_ratio, self.weight_decay, self.bf16 = warmup_ratio, weight_decay, bf16
        self.max_seq_length, self.seed = max_seq_length, seed
        self.selection: dict = {}

    @classmethod
    def from_run_args(cls, run_args, seed: int) -> TrainerClassifier:
        """The recipe's settings (`parse_run_args`' groups) for the same checkpoint."""
        training = run_args.training
        return cls(
            model_name_or_path=run_args.encoder.model_name_or_path,
            num_train_epochs=training.num_train_epochs,
            learning_rate=training.learning_rate,
            per_device_train_batch_size=training.per_device_train_batch_size,
            per_device_eval_batch_size=training.per_device_eval_batch_size,
            warmup_ratio=training.warmup_ratio,
            weight_decay=training.weight_decay,
            bf16=training.bf16,
            max_seq_length=run_args.data.max_seq_length,
            seed=seed,
        )

    def fit(self, train_texts: Sequence[str], train_labels: Sequence[int], dev_texts: Sequence[str],
            dev_labels: Sequence[int]) -> TrainerClassifier:  # fmt: skip
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

        from finetune.evaluation.baselines import macro_f1

        if not self.model_name_or_path:
            raise ArgumentError("the trainer baseline needs an encoder: --recipe_args '--model_name_or_path PATH'")
        if np.ndim(train_labels[0]) == 1:
            raise ArgumentError("the trainer baseline takes one label a text (multi-label data: leave it out)")
        self.num_labels = int(max(train_labels)) + 1
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path)
        set_seed(self.seed)  # before the new head is drawn, as transformers' examples do
        model = AutoModelForSequenceClassification.from_pretrained(self.model_name_or_path, num_labels=self.num_labels)
        self._scratch = tempfile.TemporaryDirectory(prefix="finetune-trainer-baseline-")
        arguments = TrainingArguments(
            output_dir=self._scratch.name, num_train_epochs=self.num_train_epochs, learning_rate=self.learning_rate,
            per_device_train_batch_size=self.per_device_train_batch_size,
            per_device_eval_batch_size=self.per_device_eval_batch_size,
            warmup_steps=self.warmup_ratio,  # transformers 5 reads a float below 1 as a ratio
            weight_decay=self.weight_decay, bf16=self.bf16, seed=self.seed, eval_strategy="epoch",
            save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="macro_f1",
            logging_strategy="epoch", report_to="none", use_cpu=not _has_cuda(), disable_tqdm=True,
        )  # fmt: skip

        def metrics(prediction) -> dict:
            return {"macro_f1": macro_f1(prediction.label_ids, prediction.predictions.argmax(-1), self.num_labels)}

        self.trainer = Trainer(
            model=model, args=arguments, train_dataset=self._encode(train_texts, train_labels),
            eval_dataset=self._encode(dev_texts, dev_labels), processing_class=self.tokenizer, compute_metrics=metrics,
        )  # fmt: skip
        output = self.trainer.train()
        history = [row["eval_macro_f1"] for row in self.trainer.state.log_history if "eval_macro_f1" in row]
        self.selection = {
            "dev_macro_f1_by_epoch": history,
            "dev_macro_f1": max(history) if history else None,
            "train_seconds": output.metrics["train_runtime"],
            "train_samples_per_second": output.metrics["train_samples_per_second"],
        }
        logger.info("trainer baseline: %.1f training samples/s, dev macro-F1 by epoch %s",
                    output.metrics["train_samples_per_second"], history)  # fmt: skip
        return self

    def _encode(self, texts: Sequence[str], labels: Sequence[int] | None = None):
        from datasets import Dataset

        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_seq_length)
        if labels is not None:
            encoded["labels"] = [int(label) for label in labels]
        return Dataset.from_dict(dict(encoded))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        logits = self.trainer.predict(self._encode(texts)).predictions
        return torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1).numpy()


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
