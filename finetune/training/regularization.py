"""Regularisers of the training step: an exponential moving average of the weights, and adversarial
training on the input embeddings."""

import torch
from torch import nn


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
