"""Distillation (Tang et al. 2019): a teacher's logits on a transfer set, cached; the student's loss.

The transfer set is the labelled training texts, their augmented copies (`augmentation.py`) and any
unlabelled texts; only the first keep their gold labels (-1 marks the others). Each teacher (any
saved classifier `load_classifier` loads) labels it once: its logits are cached under
`$FINETUNE_CACHE/teacher-logits` (else `~/.cache/finetune/teacher-logits`), keyed by the teacher's
files (name, size, mtime of each; a Hub id by its name) and the transfer set's texts, written
atomically. Under several processes each labels its share, gathered in order. Several teachers are
an ensemble: their probabilities are averaged, and the log of the average is the target's logits.

A teacher may also be a cheap baseline of `baselines.py` named as such (`tfidf_lr`, `fasttext`): it
is fitted here on the training split (its choice made on the validation split), and its log-
probabilities are its logits. A TF-IDF model and the BiLSTM are right on different texts, so an
ensemble of the two teaches the student more than either alone (Tang et al. used one BERT).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from finetune.data.augmentation import MASK, augment_texts
from finetune.data.corpora import unlabelled_sentences
from finetune.data.tables import read_table
from finetune.errors import ArgumentError
from finetune.evaluation.baselines import BASELINES  # the baselines that can teach, by the name a teacher is given
from finetune.files import atomic_write, cache_directory
from finetune.inference.classifier import load_classifier, process_shard
from finetune.inference.text_scores import predict_logits
from finetune.model_files import check_model_directory, hub_errors, resolve_model_directory

logger = logging.getLogger(__name__)

FORMAT = "finetune-teacher-logits/1"  # part of every cache key: bump it when what is cached changes


def distillation_loss(student, teacher, labels, *, loss: str = "mse", alpha: float = 0.5, temperature: float = 2.0):
    """`alpha` x the teacher term + (1 - alpha) x cross-entropy on the gold labels of the rows that have one.

    Args:
        student: Student logits (batch, labels).
        teacher: Teacher logits (batch, labels).
        labels: Gold label ids, -1 where a row has none (augmented and unlabelled texts).
        loss: "mse" between logits (Tang et al.), or "kl": KL(teacher || student) of the probabilities
            softened by `temperature`, times temperature squared (Hinton et al. 2015) to keep its scale.
        alpha: Weight of the teacher term.
        temperature: Softening of "kl".
    """
    if loss == "mse":
        soft = F.mse_loss(student, teacher)
    else:
        soft = F.kl_div(
            F.log_softmax(student / temperature, -1), F.softmax(teacher / temperature, -1), reduction="batchmean"
        ) * (temperature**2)
    gold = labels >= 0
    if alpha == 1 or not bool(gold.any()):
        return alpha * soft + 0.0 * student.sum()  # no gold label here: the teacher alone
    return alpha * soft + (1 - alpha) * F.cross_entropy(student[gold], labels[gold])


class DistillationLoss:
    """`TrainingStep`'s loss function for a batch that carries `teacher_logits` beside `labels`."""

    def __init__(self, loss: str, alpha: float, temperature: float):
        self.settings = dict(loss=loss, alpha=alpha, temperature=temperature)

    def __call__(self, model, batch: dict) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key not in ("labels", "teacher_logits")}
        logits = model(**inputs).logits.float()
        return distillation_loss(logits, batch["teacher_logits"].float(), batch["labels"], **self.settings)


def ensemble_logits(logits: list[np.ndarray]) -> np.ndarray:
    """One teacher: its logits. Several: the log of their averaged probabilities (an ensemble's logits)."""
    if len(logits) == 1:
        return logits[0].astype(np.float32)
    probabilities = np.mean([torch.from_numpy(x).float().softmax(-1).numpy() for x in logits], axis=0)
    return np.log(np.clip(probabilities, 1e-12, None)).astype(np.float32)


def label_order(teacher: str, teacher_id2label: dict, id2label: dict[int, str]) -> list[int]:
    """The teacher's logit column of each of the data's labels, in the data's order.

    Raises:
        ArgumentError: The teacher's labels are not the data's (both named).
    """
    theirs = {str(name): int(i) for i, name in teacher_id2label.items()}
    ours = [str(id2label[i]) for i in range(len(id2label))]
    if set(theirs) != set(ours):
        raise ArgumentError(
            f"--teacher_model_name_or_path {teacher}: its labels {sorted(theirs)} are not the data's {sorted(ours)}"
        )
    return [theirs[name] for name in ours]


def teacher_identity(teacher: str, fit_data: dict | None = None) -> dict:
    """What the cache key knows of a teacher: each file's name, size and mtime (a Hub id: its name; a
    baseline: its settings and the texts and labels it is fitted on)."""
    if teacher in BASELINES:
        settings = {key: value for key, value in vars(BASELINES[teacher]()).items() if key != "selection"}
        fitted = hashlib.sha256(json.dumps(fit_data, ensure_ascii=False).encode("utf-8")).hexdigest()
        return {"baseline": teacher, "settings": json.loads(json.dumps(settings)), "fitted_on": fitted}
    path = Path(teacher)
    if not path.is_dir():
        return {"hub_id": teacher}
    files = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        files[str(file.relative_to(path))] = [stat.st_size, stat.st_mtime_ns]
    return {"path": str(path.resolve()), "files": files}


def cache_file(teacher: str, texts: list[str], fit_data: dict | None = None, precision: str = "no") -> Path:
    """The cache entry of `teacher`'s logits on `texts`, computed under mixed `precision` (accelerate's: "no",
    "bf16", "fp16")."""
    texts_key = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode("utf-8")).hexdigest()
    identity = teacher_identity(teacher, fit_data)
    entry = {"format": FORMAT, "teacher": identity, "texts": texts_key}
    if precision != "no":  # (float32 entries keep the keys they had)
        entry["precision"] = precision
    key = json.dumps(entry, sort_keys=True)
    return cache_directory("teacher-logits") / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"


def _load_cached(path: Path, rows: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        logits = np.load(path, allow_pickle=False)
        if logits.ndim != 2 or logits.shape[0] != rows:
            raise ValueError(f"shape {logits.shape} for {rows} texts")
        return logits
    except Exception as error:  # noqa: BLE001  (a damaged entry is recomputed, never fatal)
        logger.warning("ignoring the damaged teacher cache entry %s (%s)", path, error)
        return None


def compute_teacher_logits(teacher: str, texts: list[str], accelerator, batch_size: int) -> np.ndarray:
    """`teacher`'s logits on `texts`, each process labelling a contiguous share; every process gets all. Under the
    run's mixed precision (`--bf16`: its matrix products in bfloat16, 1.5x faster on a CPU with AVX512-BF16)."""
    from accelerate.utils import gather_object

    classifier = load_classifier(teacher, device=accelerator.device)
    model, tokenizer = classifier.model.eval(), classifier.tokenizer
    # Long texts are cut to what the teacher can read (a BERT's positions), not left to fail in its forward pass
    positions = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
    start, end = process_shard(len(texts), accelerator if accelerator.num_processes > 1 else None)
    max_length = min(tokenizer.model_max_length, positions)
    with accelerator.autocast():
        logits = predict_logits(model, tokenizer, texts[start:end], batch_size, max_length=max_length)
    if accelerator.num_processes > 1:
        logits = np.concatenate(gather_object([logits]))
    return logits


def baseline_teacher_logits(teacher: str, texts: list[str], fit_data: dict, accelerator) -> np.ndarray:
    """Baseline `teacher` fitted on `fit_data` (train and validation texts and label ids), its log-probabilities
    on `texts`: computed by the main process (a fit is not worth sharing out), sent to the others."""
    from accelerate.utils import broadcast_object_list

    logits = [None]
    if accelerator.is_main_process:
        baseline = BASELINES[teacher]()
        baseline.fit(fit_data["train"]["texts"], fit_data["train"]["labels"],
                     fit_data["validation"]["texts"], fit_data["validation"]["labels"])  # fmt: skip
        logger.info("teacher %s fitted on the training split: %s", teacher, baseline.selection or "no choice made")
        probabilities = baseline.predict_proba(texts)
        logits = [np.log(np.clip(probabilities, 1e-12, None)).astype(np.float32)]
    if accelerator.num_processes > 1:
        broadcast_object_list(logits)
    return logits[0]


def teacher_config(teacher: str):
    """The teacher's config (its labels), without loading its weights; a LoRA adapter's from its base model."""
    from transformers import AutoConfig

    adapter = Path(teacher) / "adapter_config.json"
    if adapter.is_file() and not (Path(teacher) / "config.json").is_file():
        teacher = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
    with hub_errors(teacher):
        return AutoConfig.from_pretrained(teacher)


def teacher_logits(
    teachers: list[str], texts: list[str], id2label: dict, accelerator, batch_size: int = 64, fit_data=None
):
    """The (ensemble) teacher's logits on `texts`, columns in the data's label order; from the cache where it can.

    Args:
        teachers: Saved classifier directories, Hub ids, or names of baselines (`tfidf_lr`, `fasttext`).
        texts: The transfer set.
        id2label: The data's labels.
        accelerator: The run's `Accelerator` (every process must call this).
        batch_size: Texts per teacher forward pass.
        fit_data: What a baseline teacher is fitted on: `{"train": {"texts", "labels"}, "validation": ...}`,
            label ids in the data's order.

    Returns:
        (logits of shape (texts, labels), {teacher: "cache" or "computed"}).

    Raises:
        ArgumentError: A teacher's labels are not the data's.
    """
    from accelerate.utils import broadcast_object_list

    columns, sources = [], {}
    for teacher in teachers:
        baseline = teacher in BASELINES
        if baseline and fit_data is None:
            raise ValueError(f"the baseline teacher {teacher} needs fit_data")
        if not baseline:
            teacher = resolve_model_directory(teacher)  # a run directory of the earlier layout: its best/
            check_model_directory(teacher)
        order = (
            list(range(len(id2label))) if baseline else label_order(teacher, teacher_config(teacher).id2label, id2label)
        )
        precision = "no" if baseline else accelerator.mixed_precision
        path = cache_file(teacher, texts, fit_data if baseline else None, precision)
        logits = _load_cached(path, len(texts))
        hit = [logits is not None]
        if accelerator.num_processes > 1:  # every process takes the main process's answer
            broadcast_object_list(hit)
        if not hit[0] or logits is None:
            if baseline:
                logits = baseline_teacher_logits(teacher, texts, fit_data, accelerator)
            else:
                logits = compute_teacher_logits(teacher, texts, accelerator, batch_size)
            if accelerator.is_main_process:
                with atomic_write(path, "wb") as file:
                    np.save(file, logits.astype(np.float32), allow_pickle=False)
        sources[teacher] = "cache" if hit[0] else "computed"
        logger.info("teacher %s: logits of %d texts (%s)", teacher, len(texts), sources[teacher])
        columns.append(logits[:, order])
    accelerator.wait_for_everyone()
    return ensemble_logits(columns), sources


def read_unlabelled(distill, text_column: str, seed: int) -> list[str]:
    """The unlabelled texts: `--unlabelled_file` (a `.txt`: one text a line; else a table's `text_column`)
    and, with `--unlabelled_corpus`, People's Daily 1998; at most `--max_unlabelled_samples` (seeded)."""
    texts = []
    if distill.unlabelled_file:
        path = Path(distill.unlabelled_file)
        if path.suffix.lower() == ".txt":
            texts += [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        else:
            table = read_table(path)
            if text_column not in table.column_names:
                raise ArgumentError(f"--unlabelled_file {path}: no column {text_column!r} (--text_column)")
            texts += [str(text).strip() for text in table[text_column] if text is not None and str(text).strip()]
    if distill.unlabelled_corpus:
        texts += unlabelled_sentences()
    texts = list(dict.fromkeys(texts))
    if distill.max_unlabelled_samples is not None and len(texts) > distill.max_unlabelled_samples:
        texts = random.Random(seed).sample(texts, distill.max_unlabelled_samples)
    return texts


def transfer_texts(train_texts: list[str], train_labels: list[int], distill, text_column: str, seed: int):
    """The transfer set: (texts, gold labels with -1 where none, counts by part).

    The training texts keep their labels; augmented copies and unlabelled texts (none equal to a
    training text) have none.
    """
    augmented = augment_texts(train_texts, distill.augment_copies, distill.p_mask, distill.p_pos, distill.p_ng, seed)
    seen, kept = set(train_texts), {"augmented": [], "unlabelled": []}
    for part, texts in (("augmented", augmented), ("unlabelled", read_unlabelled(distill, text_column, seed))):
        for text in texts:
            if text not in seen:
                seen.add(text)
                kept[part].append(text)
    extra = kept["augmented"] + kept["unlabelled"]
    counts = {"labelled": len(train_texts), **{part: len(texts) for part, texts in kept.items()}}
    counts["total"] = len(train_texts) + len(extra)
    return [*train_texts, *extra], [*train_labels, *[-1] * len(extra)], counts


def encode_transfer_set(texts: list[str], labels: list[int], logits: np.ndarray, tokenizer, max_length: int):
    """The transfer set as the student's training split: input_ids, attention_mask, length, label, teacher_logits.

    `[UNK]` (a masked word) is kept as the unknown token, the rest segmented as the tokenizer does.
    """
    from datasets import Dataset

    rows = []
    for text in texts:
        words = []
        for i, part in enumerate(text.split(MASK)):
            words += ([MASK] if i else []) + tokenizer.segment(part)
        ids = tokenizer.convert_tokens_to_ids(tokenizer.words_to_tokens(words)[:max_length]) or [tokenizer.unk_token_id]
        rows.append(ids)
    return Dataset.from_dict(
        {
            "input_ids": rows,
            "attention_mask": [[1] * len(ids) for ids in rows],
            "length": [len(ids) for ids in rows],
            "label": labels,
            "teacher_logits": logits.tolist(),
        }
    )


def distillation_report(distill, counts: dict, sources: dict) -> dict:
    """What metrics.json (and so the model card) records of the distillation."""
    return {
        "teachers": list(distill.teacher_model_name_or_path),
        "teacher_logits": sources,
        "loss": distill.distill_loss,
        "alpha": distill.distill_alpha,
        "temperature": distill.distill_temperature if distill.distill_loss == "kl" else None,
        "augmentation": {
            "copies": distill.augment_copies,
            "p_mask": distill.p_mask,
            "p_pos": distill.p_pos,
            "p_ng": distill.p_ng,
        },
        "unlabelled": {"file": distill.unlabelled_file, "peoples_daily": distill.unlabelled_corpus},
        "transfer_set": counts,
    }


def check_single_label(problem_type: str) -> None:
    """Distillation matches the teacher's softmax over the labels: one label per text.

    Raises:
        ArgumentError: Multi-label data (a teacher's sigmoid scores are no distribution to match).
    """
    if problem_type == "multi_label_classification":
        raise ArgumentError(
            "distillation matches a teacher's softmax over one label per text; multi-label data (lists of "
            "labels, --problem_type multi_label_classification) cannot be distilled: train on it with "
            "recipes/train_bilstm_attention.py"
        )
