"""LoRA on the encoder with peft; the BiLSTM, attention and classifier train in full and are saved
with the adapter.

A LoRA run writes `OUTPUT_DIR/base/` (the classifier as it was before training: pretrained encoder,
freshly initialised head) once, and the adapter into `OUTPUT_DIR` itself (where a run saves its model, as
transformers' Trainer does): `adapter_config.json` pointing at `base/`, and `adapter_model.safetensors` with the
LoRA matrices plus full copies of the head (peft's `modules_to_save`). Both of these load it back:

    AutoModelForSequenceClassification.from_pretrained("OUTPUT_DIR")   # transformers' peft integration
    AutoPeftModelForSequenceClassification.from_pretrained("OUTPUT_DIR")

and so does `pipeline("text-classification", model="OUTPUT_DIR")`. With `lora_merge`, the
adapter is also folded into the weights (`merge_and_unload`) and saved as a plain model in
`OUTPUT_DIR/merged/`.
"""

import copy
import logging
import re
from pathlib import Path

from torch import nn

from finetune.config.tuning_arguments import LoraOptions
from finetune.errors import ArgumentError
from finetune.files import save_pretrained_atomic

logger = logging.getLogger(__name__)

# Trained in full and saved with the adapter: everything that is not the pretrained encoder.
HEAD_MODULES = ["head", "classifier"]
WRAPPABLE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d)


def default_target_modules(model: nn.Module) -> list[str]:
    """Module names LoRA wraps when the config names none: the encoder's own default.

    Each encoder kind says (`Encoder.default_lora_target_modules`): query/key/value for a BERT-family
    transformer, the token embedding table for word vectors and the biLM (peft cannot wrap an
    `nn.LSTM`). An encoder that says None gets peft's default for its checkpoint's model type.
    """
    targets = model.encoder.default_lora_target_modules()
    if targets is not None:
        return list(targets)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model_type = (model.config.encoder_config or {}).get("model_type")
    if model_type in PEFT_DEFAULTS:
        return list(PEFT_DEFAULTS[model_type])
    raise ArgumentError(f"no default LoRA target modules for encoder type {model_type!r}: set --lora_target_modules")


def encoder_target_pattern(model: nn.Module, target_modules: list[str]) -> str:
    """A regular expression (peft full-matches it) for the named modules inside the encoder only.

    Raises:
        ValueError: A name matches nothing in the encoder, or matches an `nn.LSTM` (peft cannot wrap
            one: freeze or fine-tune the LSTM layers instead).
    """
    names = "|".join(re.escape(name) for name in target_modules)
    pattern = rf"encoder\.(.*\.)?({names})"
    matched = {name: module for name, module in model.named_modules() if re.fullmatch(pattern, name)}
    for name, module in matched.items():
        if any(isinstance(m, nn.RNNBase) for m in module.modules()):
            raise ArgumentError(
                f"--lora_target_modules: {name!r} is or holds an nn.LSTM, which peft cannot wrap; "
                "LoRA on the biLM targets its embeddings (or use freeze_bottom_layers / full fine-tuning)"
            )
        if not isinstance(module, WRAPPABLE):
            raise ArgumentError(
                f"--lora_target_modules: {name!r} is a {type(module).__name__}; LoRA wraps Linear/Embedding layers"
            )
    for target in target_modules:
        if not any(name == target or name.endswith("." + target) for name in matched):
            wrappable = sorted(
                {n.rsplit(".", 1)[-1] for n, m in model.encoder.named_modules() if isinstance(m, WRAPPABLE)}
            )
            raise ArgumentError(
                f"--lora_target_modules: no encoder module named {target!r}; Linear/Embedding names: {wrappable}"
            )
    return pattern


def check_lora_targets(model: nn.Module, options: LoraOptions) -> None:
    """Raises the `ArgumentError` `apply_lora` would for targets the encoder lacks or peft cannot
    wrap, without changing the model: the recipe checks before it writes anything."""
    encoder_target_pattern(model, options.lora_target_modules or default_target_modules(model))


def apply_lora(model: nn.Module, options: LoraOptions, base_path: str):
    """Wraps `model` (a BiLSTMAttentionForSequenceClassification) with a LoRA adapter on its encoder.

    Args:
        model: The classifier, pretrained encoder weights loaded.
        options: Rank, alpha, dropout and target modules (None: `default_target_modules`).
        base_path: Where the unwrapped model is saved (`adapter_config.json` points there).

    Returns:
        A `PeftModelForSequenceClassification`; only LoRA matrices and the head train.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    targets = options.lora_target_modules or default_target_modules(model)
    modules_to_save = list(HEAD_MODULES) + (["mix"] if getattr(model.encoder, "mix", None) is not None else [])
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=encoder_target_pattern(model, targets),
        modules_to_save=modules_to_save,
    )
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_path)
    logger.info(
        "LoRA r=%d alpha=%g on %s; fully trained: %s", options.lora_r, options.lora_alpha, targets, modules_to_save
    )
    return peft_model


def apply_lora_to_run(accelerator, model: nn.Module, tokenizer, options: LoraOptions, output_dir: Path):
    """Saves the model as it is now (pretrained encoder, new head) to `OUTPUT_DIR/base/`, which the
    adapter points at, and wraps it with LoRA (`apply_lora`)."""
    base = Path(output_dir) / "base"
    if accelerator.is_main_process:
        save_pretrained_atomic(model, tokenizer, base)
    accelerator.wait_for_everyone()
    return apply_lora(model, options, base_path=base.resolve())


def lora_outputs(accelerator, model, tokenizer, output_dir: Path, options: LoraOptions) -> dict:
    """Sizes of the adapter and the full model; with `lora_merge`, the merged model in `merged/`."""
    output_dir = Path(output_dir)
    adapter_bytes = (output_dir / "adapter_model.safetensors").stat().st_size
    full_bytes = (output_dir / "base" / "model.safetensors").stat().st_size
    logger.info("LoRA adapter %.2f MB, full model %.2f MB", adapter_bytes / 1e6, full_bytes / 1e6)
    if options.lora_merge and accelerator.is_main_process:
        # merge_and_unload changes the model in place: merge a copy, the run still needs the adapter.
        merged = copy.deepcopy(model).merge_and_unload()
        save_pretrained_atomic(merged, tokenizer, output_dir / "merged")
    return {"adapter_bytes": adapter_bytes, "full_model_bytes": full_bytes, "adapter_share": adapter_bytes / full_bytes}
