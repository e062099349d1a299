"""What a run of several processes needs beyond accelerate: DDP rebuilt after unfreezing, and a check
that the processes ended with the same weights."""

import torch
from torch import nn


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
