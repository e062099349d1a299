"""The accelerator over the devices there are: several CPU processes as one run, bf16 only where the CPU
computes in it, the main process first, and what hardware a run used. Training, evaluation and
prediction all start here."""

import contextlib
import os
import platform

import torch
from accelerate import Accelerator

from finetune.errors import ArgumentError


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


def mixed_precision(bf16: bool, fp16: bool) -> str | None:
    """accelerate's `mixed_precision` for `--bf16`/`--fp16` (None: as `accelerate launch` configured it).

    Raises:
        ArgumentError: `--fp16` without a CUDA GPU (accelerate would silently train in float32).
    """
    if fp16 and not torch.cuda.is_available():
        raise ArgumentError("--fp16 needs a CUDA GPU (on a CPU it would train in float32); use --bf16 on CPUs")
    return "bf16" if bf16 else "fp16" if fp16 else None


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
