"""K same-architecture client segments stored as one module with stacked parameters.

Many virtual clients share one process. Every parameter is kept as one ``(K, *shape)``
``nn.Parameter``, so one standard optimizer over ``StackedSegments.parameters()`` is
exactly K independent per-client optimizers for elementwise update rules (SGD with
momentum / weight decay, Adam, AdamW). Optimizers that couple elements across a tensor
(LARS/LAMB trust ratios, whole-tensor gradient clipping) would mix clients: don't.

Three ways to run the K segments (``mode``; ``"auto"`` picks per device, see
`resolve_mode`). Measured on a 2-core CPU shared with other jobs, torch 2.13, one
thread, forward+backward of lenet cut 1 on MNIST, B=32 (``bench --preset exec``):

- ``"loop"``: a Python loop over clients on slices of the stacked parameters.
  K=20: 74 ms, K=100: 383 ms (earlier, idle machine: K=20 63 ms, the same as one
  unsplit segment on K*B samples, i.e. the per-client overhead is negligible at these
  sizes). Client k's output and gradients are bitwise equal to its unstacked segment,
  so they cannot depend on how clients are grouped per process. Fastest on CPU.
- ``"grouped"`` (`models.grouped`): one grouped convolution / GroupNorm / batched
  matmul per layer for all K clients, in a (B, K*C, H, W) layout that keeps every
  client's GroupNorm groups contiguous. K=20: 85 ms, K=100: 695 ms on CPU (the CPU
  grouped-conv backward is slower than K dense ones). Meant for CUDA, where it replaces
  K small kernel launches per layer by one; its GPU speed is not measured yet.
- ``"vmap"``: one ``torch.vmap`` over ``functional_call``. K=20: 111 ms, K=100:
  1037 ms. Slower because vmap's grouped conv returns a (B, K*C, H, W) layout that the
  vmapped GroupNorm then reads as strided memory (profile: ~45% of the time in one
  aten::mul). It only wins when per-client work is tiny (8x8 digits, B=8).

``grouped`` and ``vmap`` agree with the loop to float32 rounding only (not bitwise), and
for ResNet they also change bitwise with K. Known CPU defect (torch 2.13, oneDNN on):
for a ResNet stem + stage 1 with K=3 both give the last client weight gradients ~1% off
(tests/unit/test_client_exec.py pins it as a strict xfail); with oneDNN off they agree.
``auto`` never picks them on CPU.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lightning_gapsl.models.stacked_adam import StackedAdam
from lightning_gapsl.models.grouped import (
    from_grouped,
    grouped_forward,
    grouped_supported,
    to_grouped,
)

MODES = ("auto", "loop", "vmap", "grouped")

# Registered attribute names may not contain "."; the constructor checks that escaping
# is collision-free and keeps the original names for the mapping back.
_SEP = "__"


def _escape(name: str) -> str:
    """``"0.weight" -> "0__weight"`` so a dotted name can be a registered attribute."""
    return name.replace(".", _SEP)


class StackedSegments(nn.Module):
    """K client segments of the same architecture; parameters stored stacked, (K, *shape).

    ``forward`` takes ``(K, B, *in)`` and returns ``(K, B, *out)``: client ``k``'s segment
    applied to its own mini-batch ``x[k]``. ``mode`` is ``"loop"`` (default: fastest on
    CPU at realistic sizes and bitwise equal to unstacked segments), ``"vmap"``,
    ``"grouped"`` (see module docstring) or ``"auto"`` (`resolve_mode` per device).
    The segments' weights are copied; the segments themselves are not kept.
    """

    def __init__(self, segments: list[nn.Module], mode: str = "loop") -> None:
        super().__init__()
        if not segments:
            raise ValueError("StackedSegments needs at least one segment")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self._grouped_ok = grouped_supported(segments[0])
        if mode == "grouped" and not self._grouped_ok:
            raise ValueError(
                "mode='grouped' has no translation for a layer of this segment; use loop or vmap"
            )
        self.mode = mode
        self.num_segments = len(segments)

        first = segments[0]
        self._param_names = [name for name, _ in first.named_parameters()]
        self._buffer_names = [name for name, _ in first.named_buffers()]
        self._state_keys = list(first.state_dict().keys())
        escaped = [_escape(n) for n in self._param_names + self._buffer_names]
        if len(set(escaped)) != len(escaped):
            raise ValueError(f"parameter names collide after escaping: {escaped}")

        for seg in segments[1:]:
            shapes = {n: t.shape for n, t in seg.state_dict().items()}
            if shapes != {n: t.shape for n, t in first.state_dict().items()}:
                raise ValueError("all segments must have the same architecture")

        # Template for functional_call: structure only, no storage (meta device), so it
        # costs nothing and can never be trained by mistake.
        self._template = [copy.deepcopy(first).to("meta")]  # list: hide from .modules()
        with torch.no_grad():
            for name in self._param_names:
                stacked = torch.stack([seg.get_parameter(name).detach() for seg in segments])
                requires_grad = first.get_parameter(name).requires_grad
                self.register_parameter(
                    _escape(name), nn.Parameter(stacked.clone(), requires_grad=requires_grad)
                )
            for name in self._buffer_names:
                stacked = torch.stack([seg.get_buffer(name).detach() for seg in segments])
                self.register_buffer(_escape(name), stacked.clone())

    # ------------------------------------------------------------------ tensors by name
    def stacked_params(self) -> dict[str, Tensor]:
        """Original parameter name -> stacked ``(K, *shape)`` parameter, in fixed order."""
        return {n: getattr(self, _escape(n)) for n in self._param_names}

    def _stacked_buffers(self) -> dict[str, Tensor]:
        """Original buffer name -> stacked ``(K, *shape)`` buffer."""
        return {n: getattr(self, _escape(n)) for n in self._buffer_names}

    def all_equal(self) -> bool:
        """True when every segment holds bit-identical parameters and buffers (GAPSL at
        full alignment keeps its clients one model), so one forward stands for all."""
        tensors = [*self.stacked_params().values(), *self._stacked_buffers().values()]
        return all(torch.equal(t, t[:1].expand_as(t)) for t in tensors)

    # ------------------------------------------------------------------ forward
    def _call_one(self, params_and_buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        """Run the template with one client's tensors on its mini-batch ``x`` (B, *in)."""
        return functional_call(self._template[0], params_and_buffers, (x,))

    def resolved_mode(self, device: torch.device) -> str:
        """The execution mode on ``device``: ``mode`` itself unless it is ``"auto"``."""
        if self.mode != "auto":
            return self.mode
        return resolve_mode(device, self._grouped_ok)

    def forward(self, x: Tensor, active: Tensor | None = None) -> Tensor:
        """``x`` (K, B, *in) -> (K, B, *out); client k's segment on ``x[k]``.

        ``active`` (K,) bool (partial participation): in loop mode only those clients
        compute, the others' rows are zeros outside the graph (their numbers unchanged:
        the same per-client arithmetic); vmap and grouped still run all K in one kernel.
        """
        if x.shape[0] != self.num_segments:
            raise ValueError(f"expected leading dim {self.num_segments}, got {tuple(x.shape)}")
        tensors = {**self.stacked_params(), **self._stacked_buffers()}
        mode = self.resolved_mode(x.device)
        if mode == "vmap":
            return torch.vmap(self._call_one)(tensors, x)
        if mode == "grouped":
            k = self.num_segments
            grouped_in = to_grouped(x) if x.dim() == 5 else x  # (B, K*C, H, W) or (K, B, F)
            return from_grouped(grouped_forward(self._template[0], tensors, grouped_in, k), k)
        # unbind once per tensor: its backward is a single stack, not K index-scatters.
        per_client = {n: t.unbind(0) for n, t in tensors.items()}
        ks = range(self.num_segments) if active is None else active.nonzero().flatten().tolist()
        outs = {k: self._call_one({n: ts[k] for n, ts in per_client.items()}, x[k]) for k in ks}
        if not outs:  # none of this rank's clients delivers: zeros still in the graph (for
            # the backward every rank runs); client 0's gradient is zero, its step skipped.
            one = self._call_one({n: ts[0] for n, ts in per_client.items()}, x[0]) * 0.0
            return torch.stack([one] * self.num_segments)
        zero = torch.zeros_like(next(iter(outs.values())))  # (B, *out), idle clients' rows
        return torch.stack([outs.get(k, zero) for k in range(self.num_segments)])

    def backward_each(self, x: Tensor, loss_of: Callable[[int, Tensor], Tensor]) -> Tensor:
        """Segment ``k`` on ``x[k]``, then ``loss_of(k, out_k).backward()``, for k = 0..K-1.

        Gives the gradients of one loop-mode `forward` over all K followed by one backward
        of ``sum_k loss_of(k, out[k])`` (client k's parameters and ``x[k]`` only reach
        term k), but holds one segment's graph at a time instead of K: SplitFed V1's K
        server copies keep 1/K of their activations alive. Each segment runs on leaves
        cut from the stacked tensors, so its gradients are computed exactly as in the
        loop forward; each is copied into its slice of the parameter's stacked ``.grad``,
        which must be None before (``zero_grad(set_to_none=True)``).

        Args:
            x: ``(K, B, *in)`` inputs; not differentiated through (a detached copy is used).
            loss_of: ``(k, out_k (B, *out)) -> scalar`` loss of segment k.

        Returns:
            ``(K, B, *in)`` the gradient of the summed losses with respect to ``x``.
        """
        if x.shape[0] != self.num_segments:
            raise ValueError(f"expected leading dim {self.num_segments}, got {tuple(x.shape)}")
        params, buffers = self.stacked_params(), self._stacked_buffers()
        if any(p.grad is not None for p in params.values()):
            raise ValueError("backward_each writes .grad: zero_grad(set_to_none=True) first")
        # Filled slice by slice as each segment finishes, so no second copy of the
        # gradients is ever held; a slice no gradient reaches stays 0, as in unbind's
        # backward.
        trained = {n: p for n, p in params.items() if p.requires_grad}
        grads = {n: torch.zeros_like(p) for n, p in trained.items()}  # (K, *shape) each
        reached = dict.fromkeys(trained, False)
        x_grad = torch.zeros_like(x)  # (K, B, *in)
        for k in range(self.num_segments):
            leaves = {n: p[k].detach().requires_grad_(p.requires_grad) for n, p in params.items()}
            x_k = x[k].detach().requires_grad_(True)  # (B, *in)
            out = self._call_one({**leaves, **{n: b[k] for n, b in buffers.items()}}, x_k)
            loss_of(k, out).backward()
            for name in trained:
                if leaves[name].grad is not None:
                    grads[name][k].copy_(leaves[name].grad)
                    reached[name] = True
            if x_k.grad is not None:
                x_grad[k].copy_(x_k.grad)
            del leaves, x_k, out  # this segment's graph and gradients, before the next
        for name, p in trained.items():
            p.grad = grads[name] if reached[name] else None
        return x_grad

    def forward_one(self, k: int, x: Tensor) -> Tensor:
        """Client ``k``'s segment alone on ``x`` (B, *in) -> (B, *out) (evaluation)."""
        tensors = {**self.stacked_params(), **self._stacked_buffers()}
        return self._call_one({n: t[k] for n, t in tensors.items()}, x)

    def train(self, mode: bool = True) -> StackedSegments:
        """Also switch the hidden template, whose mode layers like Dropout/BatchNorm read."""
        super().train(mode)
        self._template[0].train(mode)
        return self

    # ------------------------------------------------------------------ per-client views
    def segment(self, k: int) -> nn.Module:
        """An independent module holding client ``k``'s current weights (no shared storage)."""
        reference = next(iter(self.stacked_params().values()), None)
        module = copy.deepcopy(self._template[0])
        if reference is not None:
            module = module.to(dtype=reference.dtype)
        device = reference.device if reference is not None else torch.device("cpu")
        module = module.to_empty(device=device)
        with torch.no_grad():
            for name, stacked in self.stacked_params().items():
                module.get_parameter(name).copy_(stacked[k])
            for name, stacked in self._stacked_buffers().items():
                module.get_buffer(name).copy_(stacked[k])
        return module

    def segment_state(self, k: int) -> dict[str, Tensor]:
        """Client ``k``'s state dict (same keys as the unstacked segment's), cloned."""
        tensors = {**self.stacked_params(), **self._stacked_buffers()}
        return {n: tensors[n][k].detach().clone() for n in self._state_keys}

    def load_segment_state(self, k: int, state_dict: dict[str, Tensor]) -> None:
        """Copy an unstacked segment's state dict into client ``k``'s slice."""
        missing = set(self._state_keys) - set(state_dict)
        unexpected = set(state_dict) - set(self._state_keys)
        if missing or unexpected:
            raise KeyError(f"segment state mismatch: missing={missing} unexpected={unexpected}")
        tensors = {**self.stacked_params(), **self._stacked_buffers()}
        with torch.no_grad():
            for name in self._state_keys:
                tensors[name][k].copy_(state_dict[name])

    # ------------------------------------------------------------------ gradients
    def flat_grads(self) -> Tensor:
        """(K, D): each client's gradient, flattened in `stacked_params` order (None -> 0)."""
        parts = []
        for p in self.stacked_params().values():
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            parts.append(grad.reshape(self.num_segments, -1))  # (K, numel)
        return torch.cat(parts, dim=1) if parts else torch.zeros(self.num_segments, 0)

    def set_flat_grads(self, grads: Tensor) -> None:
        """Write ``grads`` (K, D), laid out as in `flat_grads`, into the params' ``.grad``."""
        params = list(self.stacked_params().values())
        sizes = [p[0].numel() for p in params]
        if grads.shape != (self.num_segments, sum(sizes)):
            raise ValueError(
                f"expected grads of shape {(self.num_segments, sum(sizes))}, got {tuple(grads.shape)}"
            )
        for p, g in zip(params, grads.split(sizes, dim=1), strict=False):
            g = g.reshape(p.shape).to(dtype=p.dtype)
            if p.grad is None:
                p.grad = g.clone()
            else:
                p.grad.copy_(g)

    def extra_repr(self) -> str:
        """Summary for ``print(module)``."""
        return f"num_segments={self.num_segments}, mode={self.mode!r}"


def masked_step_(optimizer: torch.optim.Optimizer, active: Tensor) -> None:
    """``optimizer.step()`` for stacked ``(K, ...)`` parameters, skipping inactive clients.

    Local-pass rounds leave some clients idle at some steps (`lightning_gapsl.data.rounds`).
    A plain step would still move an idle client: momentum, Adam's moments and weight
    decay all act on a zero gradient. This takes the step and then puts back, for every
    client with ``active[k] == False``, its slice of every parameter and of every
    per-parameter state tensor whose first dimension is ``K`` (SGD's momentum buffer,
    Adam's ``exp_avg``/``exp_avg_sq``); state a step creates for the first time is zeroed
    for idle clients, which is what their own first step will find (SGD starts its buffer
    at the gradient, ``m * 0 + g``; Adam's moments start at 0).

    Exact for SGD (momentum, dampening, weight decay, nesterov). Adam's scalar ``step``
    count would advance for every client, so the runtime's stacked Adam is
    `lightning_gapsl.models.stacked_adam.StackedAdam`, which keeps one count per
    client and steps only the active rows itself.

    Args:
        optimizer: over stacked parameters only (first dimension ``K`` each).
        active: ``(K,)`` bool; all True is a plain ``optimizer.step()``.
    """
    if active.dtype != torch.bool or active.dim() != 1:
        raise ValueError(
            f"active must be a bool (K,) tensor, got {active.dtype} {tuple(active.shape)}"
        )
    if isinstance(optimizer, StackedAdam):
        optimizer.step(active=active)
        return
    if bool(active.all()):
        optimizer.step()
        return
    k = active.numel()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    idle = (~active).nonzero().flatten()  # (I,)
    saved = []
    for p in params:
        if p.dim() == 0 or p.shape[0] != k:
            raise ValueError(f"every parameter must be stacked (K={k}, ...), got {tuple(p.shape)}")
        idle_p = idle.to(p.device)
        state = {
            name: v[idle_p].clone()
            for name, v in optimizer.state.get(p, {}).items()
            if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == k
        }
        saved.append((p, idle_p, p.detach()[idle_p].clone(), state))
    optimizer.step()
    with torch.no_grad():
        for p, idle_p, value, state in saved:
            p.index_copy_(0, idle_p, value)
            for name, v in optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == k:
                    old = state.get(name)
                    v.index_copy_(
                        0, idle_p, old if old is not None else torch.zeros_like(v[idle_p])
                    )


def resolve_mode(device: torch.device, grouped_ok: bool) -> str:
    """What ``mode="auto"`` runs on ``device``.

    CPU: the loop, measured fastest there (module docstring, BENCHMARKS.md). CUDA: the
    grouped kernels when every layer has a translation, else vmap; one launch per layer
    for all K clients instead of K small launches. The CUDA choice is not measured yet
    (no GPU was available to this work); ``bench --preset gpu`` times all three modes.
    """
    if device.type != "cuda":
        return "loop"
    return "grouped" if grouped_ok else "vmap"
