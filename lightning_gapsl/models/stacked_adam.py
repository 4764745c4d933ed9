"""Adam over stacked ``(K, ...)`` client parameters with one step count per client.

`torch.optim.Adam` keeps one scalar step count per parameter tensor. When the tensor
stacks K clients and only some of them step (local-pass rounds, whole-epoch turns), a
shared count bias-corrects a client's update as if it had stepped whenever any client
did: a small client that made 6 steps of its own after 190 steps of the round is
corrected with ``1 - 0.999 ** 190`` instead of ``1 - 0.999 ** 6``, a second-moment
correction 30 times too weak, an update about 5 times too large; in a whole-epoch turn
every client after the first starts with a count of hundreds. And the count would
depend on which clients share a process. Each client here has its own count, as if it
had its own optimizer, which is what every client has on a real device.

The arithmetic is torch's single-tensor Adam (L2 weight decay added to the gradient,
bias corrections in double precision, the same in-place operations in the same order),
applied to the rows of one step count at a time, so a step where every client steps
with equal counts is bit-for-bit `torch.optim.Adam`.
"""

from __future__ import annotations

import torch
from torch import Tensor


class StackedAdam(torch.optim.Optimizer):
    """Adam for parameters whose first dimension is the client (K); ``step(active)``
    moves only the clients with ``active[k]`` (all of them by default) and advances
    only their step counts; idle clients' parameters and moments are untouched."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0:
                    raise ValueError("StackedAdam needs stacked (K, ...) parameters, got a scalar")

    @torch.no_grad()
    def step(self, closure=None, active: Tensor | None = None):
        """One step for the ``active`` (K,) bool clients (None: all)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._step_param(p, group, active)
        return loss

    def _step_param(self, p: Tensor, group: dict, active: Tensor | None) -> None:
        k = p.shape[0]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(k, dtype=torch.int64)  # (K,) per-client counts
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if active is None:
            active = torch.ones(k, dtype=torch.bool)
        if active.shape != (k,):
            raise ValueError(f"active must be (K={k},), got {tuple(active.shape)}")
        steps = state["step"]
        steps += active.to(steps)
        for count in torch.unique(steps[active]).tolist():  # rows of one count at a time
            rows = (active & (steps == count)).nonzero().flatten()  # (R,)
            if rows.numel() == k:  # every client, one count: in place, as torch does
                _adam_rows(p, p.grad, state["exp_avg"], state["exp_avg_sq"], count, group)
                continue
            idx = rows.to(p.device)
            param, m, v = p[idx], state["exp_avg"][idx], state["exp_avg_sq"][idx]  # copies
            _adam_rows(param, p.grad[idx], m, v, count, group)
            p.index_copy_(0, idx, param)
            state["exp_avg"].index_copy_(0, idx, m)
            state["exp_avg_sq"].index_copy_(0, idx, v)


def _adam_rows(
    param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, group: dict
) -> None:
    """torch's single-tensor Adam update of ``param`` in place at step count ``step``."""
    beta1, beta2 = group["betas"]
    if group["weight_decay"] != 0:
        grad = grad.add(param, alpha=group["weight_decay"])
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = group["lr"] / bias_correction1
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(group["eps"])
    param.addcdiv_(exp_avg, denom, value=-step_size)
