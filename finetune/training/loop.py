"""The fine-tuning loop and its steps: what `recipes/train_bilstm_attention.py` runs.

Its state (`checkpointing.LoopState`) is what a checkpoint holds of it; `Schedule` says when to
validate and save, for how long, and by which metric the best model is kept; `TrainingStep` does one
batch (forward, backward, the adversarial pass, clipping, the optimizer, the weight average) and the
log lines; `EarlyStopping` counts evaluations without a better metric.
"""

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from finetune.config.checks import best_model_metric
from finetune.data.features import eval_dataloader
from finetune.evaluation.metrics import evaluate_split, log_line, metric_value, short_metrics
from finetune.files import save_pretrained_into
from finetune.inference.classifier import write_predictions
from finetune.training.checkpointing import LoopState, load_checkpoint, remove_partial_checkpoints, save_checkpoint
from finetune.training.distributed import rewrap_model
from finetune.training.freezing import apply_freezing
from finetune.training.interruptions import StopRequests
from finetune.training.optimization import check_finite_loss, count_parameters, total_training_steps
from finetune.training.regularization import EmbeddingAdversary, create_weight_average
from finetune.training.run_directory import fingerprint

logger = logging.getLogger(__name__)


class EarlyStopping:
    """Tracks the best value of a metric; says when patience runs out.

    Args:
        patience: Evaluations without a better value before `should_stop` (0: never).
        best: The best value so far (resuming), None before the first evaluation.
        bad_evaluations: Evaluations since the best (resuming).
        greater_is_better: False for a loss.
    """

    def __init__(self, patience: int, best: float | None = None, bad_evaluations: int = 0, greater_is_better=True):
        self.patience = patience
        self.sign = 1.0 if greater_is_better else -1.0
        self.best = -math.inf * self.sign if best is None else best
        self.bad_evaluations = bad_evaluations

    @property
    def best_or_none(self) -> float | None:
        """The best value, or None before the first evaluation (inf has no JSON spelling)."""
        return self.best if math.isfinite(self.best) else None

    def update(self, value: float) -> bool:
        """Records `value`; returns True when it is a new best."""
        if self.sign * value > self.sign * self.best:
            self.best, self.bad_evaluations = value, 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_evaluations >= self.patience


def unfreeze_for_epoch(accelerator, model, policy, epoch: int):
    """Gradual unfreezing at the start of `epoch` (`policy` None: nothing to do, e.g. under LoRA);
    returns the model, wrapped for DDP again when parameters were unfrozen."""
    if policy is None or epoch == 0 or not apply_freezing(accelerator.unwrap_model(model).encoder, policy, epoch):
        return model
    logger.info("Parameters: %s trainable", f"{count_parameters(model)[0]:,}")
    return rewrap_model(accelerator, model)


def threshold_metric(metric: str) -> str:
    """The F1 a multi-label model's thresholds maximise: macro_f1 if the run selects on it, else micro_f1."""
    return "macro_f1" if metric == "macro_f1" else "micro_f1"


@dataclass
class Schedule:
    """When the loop validates and checkpoints, how long it runs, and by which metric it keeps the best.

    Computed once (`Schedule.of`) from the arguments and the batches per epoch; the scheduler's
    length is `total_steps`.
    """

    steps_per_epoch: int
    total_steps: int
    eval_steps: int | None  # None: at epoch ends
    save_steps: int | None  # None: at epoch ends; 0: never
    metric: str  # as metrics.json names it after `validation_`, or f1:LABEL (`metrics.metric_value`)
    greater: bool
    # Multi-label: (threshold strategy, F1) that validation is scored at, thresholds tuned for it on the
    # validation rows (`metrics.evaluate_split`): an epoch is selected as the model will be used. None: 0.5.
    tune: tuple[str, str] | None = None

    @classmethod
    def of(cls, args, batches: int, num_processes: int, multi_label: bool = False) -> "Schedule":
        """`args`: the run's `RunArguments`; `batches`: batches per epoch before `accelerator.prepare`
        splits them between `num_processes`; `multi_label`: the model scores sets of labels."""
        training = args.training
        per_epoch, total = total_training_steps(
            math.ceil(batches / num_processes),
            training.num_train_epochs,
            training.max_steps,
            training.gradient_accumulation_steps,
        )
        metric = best_model_metric(training.metric_for_best_model)
        greater = training.greater_is_better if training.greater_is_better is not None else not metric.endswith("loss")
        eval_steps = None
        if training.eval_strategy == "steps":
            eval_steps = training.eval_steps or args.logging.logging_steps  # as transformers defaults it
        save_steps = {"epoch": None, "steps": training.save_steps, "no": 0}[training.save_strategy]
        tune = (training.threshold_strategy, threshold_metric(metric)) if multi_label else None
        return cls(per_epoch, total, eval_steps, save_steps, metric, greater, tune)

    def evaluate_now(self, step: int) -> bool:
        every = self.eval_steps or self.steps_per_epoch
        return step % every == 0 or step == self.total_steps

    def save_now(self, step: int) -> bool:
        """Epoch ends (`epoch`), or every `save_steps` and the last step (`steps`, as transformers saves)."""
        if self.save_steps == 0:
            return False
        if self.save_steps is None:
            return step % self.steps_per_epoch == 0
        return step % self.save_steps == 0 or step == self.total_steps


def model_loss(model, batch: dict) -> torch.Tensor:
    """The model's own loss (cross-entropy on `labels`, as its config's `problem_type` says)."""
    return model(**batch).loss


class TrainingStep:
    """One batch of training: forward, backward (and the adversarial pass), clipping, the optimizer
    and scheduler steps, the weight average; and the log line of the losses since the last one.

    Args:
        accelerator: The run's `Accelerator`.
        model, optimizer, scheduler: Prepared by the accelerator.
        training: `max_grad_norm`, `ema_decay`, `adversarial_epsilon`, `adversarial_interval`.
        loss_function: `loss_function(model, batch) -> loss` (None: the model's own, `model(**batch).loss`);
            distillation gives its own (`finetune.training.distillation.DistillationLoss`).
    """

    def __init__(self, accelerator: Accelerator, model, optimizer, scheduler, training, loss_function=None):
        self.accelerator, self.optimizer, self.scheduler = accelerator, optimizer, scheduler
        self.loss_function = loss_function or model_loss
        self.max_grad_norm = training.max_grad_norm
        unwrapped = accelerator.unwrap_model(model)
        # Checkpointed by `save_checkpoint` as safetensors, not `accelerator.register_for_checkpointing`,
        # whose pickle accelerate loads with weights_only=False: a planted checkpoint file would run code.
        self.average = create_weight_average(unwrapped, training.ema_decay)
        self.adversary = None
        if training.adversarial_epsilon > 0:
            self.adversary = EmbeddingAdversary(unwrapped, training.adversarial_epsilon)
        self.adversarial_interval = training.adversarial_interval

    def __call__(self, model, batch: dict, optimizer_step: int = 0) -> torch.Tensor:
        """Trains on `batch`, part of optimizer step `optimizer_step` (taken once the accumulation is
        complete); returns its loss. The adversarial pass runs on the batches of every
        `adversarial_interval`-th optimizer step: the same ones in one process with accumulation, in
        several processes, and after a resume."""
        accelerator = self.accelerator
        with accelerator.accumulate(model):
            loss = self.loss_function(model, batch)
            accelerator.backward(loss)
            if self.adversary is not None and optimizer_step % self.adversarial_interval == 0:
                accelerator.backward(self.adversary.loss(model, batch, self.loss_function))
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
            if self.average is not None and accelerator.sync_gradients:
                self.average.update_parameters(accelerator.unwrap_model(model))
        return loss

    def evaluated(self, model):
        """The model to validate and save: the weight average if there is one."""
        return model if self.average is None else self.average.module

    def check(self, state: LoopState, epoch: int, training) -> torch.Tensor:
        """The mean training loss since the last log, over all processes; stops the run (naming the
        first step whose loss was not finite) if one was not. The loop keeps the losses on the
        device and reads them only here, at a log line or a checkpoint: no host sync every step."""
        if not state.running:  # (on every process alike: the same steps ran)
            return torch.zeros(())
        device = self.accelerator.device
        losses = torch.stack([torch.as_tensor(loss, dtype=torch.float32, device=device) for loss in state.running])
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            later_batches = len(losses) - 1 - first
            step = state.step - later_batches // self.accelerator.gradient_accumulation_steps
            check_finite_loss(float(losses[first]), step, epoch, training)
        return self.accelerator.gather(losses.mean().unsqueeze(0)).mean()

    def log(self, state: LoopState, epoch: int, progress, training) -> None:
        """The mean training loss since the last log (all processes) and the learning rate: into the
        history, the progress bar and the trackers."""
        mean = check_finite_loss(self.check(state, epoch, training).item(), state.step, epoch, training)
        rate = self.scheduler.get_last_lr()[0]
        state.history["train"].append({"step": state.step, "epoch": epoch, "loss": mean})
        progress.set_postfix(loss=f"{mean:.4f}", lr=f"{rate:.2e}")
        self.accelerator.log({"train/loss": mean, "train/learning_rate": rate, "train/epoch": epoch}, step=state.step)
        state.running = []

    def close(self) -> None:
        if self.adversary is not None:
            self.adversary.remove()


def training_loop(model, tokenizer, loaders, step: TrainingStep, accelerator, args, schedule: Schedule, run: tuple):
    """The loop: train; validate as `eval_strategy` says, keeping the best model by
    `metric_for_best_model` in OUTPUT_DIR itself; checkpoint as `save_strategy` says, and at the end (a checkpoint
    of the finished loop: a run stopped while writing its outputs resumes there); resume mid-epoch. A
    loss or validation score that is not finite stops the run; SIGTERM or Ctrl-C stop it at the next step
    with a checkpoint (`interruptions.StopRequests`). `run` is (identity, checkpoint or None).
    Returns the model, the loop's state and the best weights."""
    train_loader, validation_loader = loaders
    training, output_dir = args.training, Path(args.training.output_dir)
    state, best_weights = LoopState(run=fingerprint(run[0]), run_identity=run[0]), {}
    if accelerator.is_main_process:
        remove_partial_checkpoints(output_dir)
    if run[1] is not None:
        state, best_weights = load_checkpoint(accelerator, run[1], step.average)
    stopper = EarlyStopping(training.early_stopping_patience, state.best_value, state.bad_evaluations, schedule.greater)
    start = time.perf_counter() - state.elapsed
    main = accelerator.is_local_main_process
    progress = tqdm(total=schedule.total_steps, initial=state.step, desc="Training", disable=not main)

    def checkpoint(epoch: int) -> Path:
        step.check(state, epoch, training)  # a diverged run is never saved
        state.elapsed = time.perf_counter() - start
        return save_checkpoint(accelerator, output_dir, state, best_weights, training.save_total_limit, step.average)

    # A checkpoint of a finished loop (the run stopped while writing its outputs) goes straight to the outputs
    epochs = range(state.epoch, training.num_train_epochs) if not state.finished else range(0)
    with StopRequests() as stop:
        for epoch in epochs:
            model = unfreeze_for_epoch(accelerator, model, args.freezing if not args.lora.enabled else None, epoch)
            train_loader.set_epoch(epoch)
            for batch in accelerator.skip_first_batches(train_loader, state.batches) if state.batches else train_loader:
                loss = step(model, batch, state.step)
                state.running.append(loss.detach())
                state.batches = state.batches + 1
                state.seen = state.seen + len(batch["labels"]) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                progress.update(1)
                evaluating = schedule.evaluate_now(state.step)
                # The first step and each evaluation's too: a run shorter than logging_steps has a training loss
                # (the curves' line), and each validation line says where training stood
                if state.step % args.logging.logging_steps == 0 or state.step == 1 or evaluating:
                    step.log(state, epoch, progress, training)
                if evaluating:
                    evaluated = step.evaluated(model)
                    metrics = evaluate_split(evaluated, validation_loader, accelerator, "validation_",
                                             tune=schedule.tune)  # fmt: skip
                    check_finite_loss(metrics["validation_loss"], state.step, epoch, training, what="validation loss")
                    state.history["eval"].append({"step": state.step, "epoch": epoch, **short_metrics(metrics)})
                    accelerator.log({f"eval/{k}": v for k, v in short_metrics(metrics).items()}, step=state.step)
                    train_loss = state.history["train"][-1]["loss"]
                    logger.info("step %d: train loss=%.4f; validation %s", state.step, train_loss, log_line(metrics))
                    if stopper.update(metric_value(metrics, schedule.metric)):
                        state.best = {**metrics, "best_step": state.step, "best_epoch": epoch}
                        evaluated = accelerator.unwrap_model(evaluated)
                        best_weights = save_best(accelerator, evaluated, tokenizer, output_dir)
                state.epoch, state.best_value = epoch, stopper.best_or_none
                state.bad_evaluations = stopper.bad_evaluations
                state.finished = state.step >= schedule.total_steps or stopper.should_stop
                stopping = stop.requested(accelerator)
                saved = None
                if schedule.save_now(state.step) or ((state.finished or stopping) and schedule.save_steps != 0):
                    saved = checkpoint(epoch)
                if stopping:
                    progress.close()
                    raise stop.interrupted(state.step, epoch, saved)
                if state.finished:
                    break
            if state.finished:
                break
            state.batches = 0
    if stopper.should_stop:
        logger.info("Early stopping: no better validation %s in %d evaluations", schedule.metric, stopper.patience)
    progress.close()
    step.close()
    state.elapsed = time.perf_counter() - start
    return model, state, best_weights


def save_best(accelerator, model, tokenizer, output_dir: Path) -> dict:
    """Writes a new best model into OUTPUT_DIR (among the run's files);
    returns its weights (kept in checkpoints, restored at the end)."""
    if accelerator.is_main_process:
        save_pretrained_into(model, tokenizer, output_dir)
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def test_best_model(model, dataset, tokenizer, accelerator, args) -> dict:
    """Test metrics of the best model, and its predictions in `test_predictions.csv`."""
    loader, order = eval_dataloader(dataset, tokenizer, args.training.per_device_eval_batch_size)
    start = time.perf_counter()
    metrics, probabilities = evaluate_split(
        model, accelerator.prepare(loader), accelerator, "test_", return_scores=True
    )
    metrics["test_samples_per_second"] = len(dataset) / (time.perf_counter() - start)
    logger.info("test: %s", log_line(metrics, "test_"))
    if accelerator.is_main_process:
        path = Path(args.training.output_dir) / "test_predictions.csv"
        write_predictions(dataset.select(order), probabilities, accelerator.unwrap_model(model).config, path)
    return metrics
