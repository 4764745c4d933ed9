"""GAPSL: gradient-aligned parallel split learning, as reconstructed by this project.

The paper body is not available; this is the project's reading of its abstract
(docs/explanations/gapsl.md). Each step the server holds one gradient vector per client, stacked
into a matrix ``g`` of shape ``(N, D)`` (row ``i`` = client ``i``; in the "cut" reading
it is the batch mean of client ``i``'s cut-layer gradient, see `batch_mean_flat`).

1. Leader gradient identification (LGI, `identify_leaders`): score every client by its
   mean cosine similarity to the other clients (its *consistency*); the most consistent
   clients are the *leaders*, and their mean gradient is the step's leader gradient.
2. The leader gradient is smoothed over steps with an exponential moving average
   (`ema`), the "global convergence trend".
3. Gradient direction alignment (GDA, `align`): pull every client's gradient towards the
   direction of the smoothed leader gradient, more strongly the less aligned it is.
4. In the cut reading the change of each client's mean gradient is applied to every
   sample of its cut-layer gradient (`cut_layer_shift`), so the client segment
   back-propagates the aligned gradient.

With ``lam = 0`` the aligned gradients are bit-for-bit the input ones, so GAPSL reduces
exactly to PSL (`lightning_gapsl.methods.shared.losses`). All functions are pure: no process
groups, no Lightning, no globals, inputs are never modified in place (the EMA state is
returned, not updated).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ALIGN_MODES",
    "AlignResult",
    "GapslConfig",
    "LGIResult",
    "align",
    "batch_mean_flat",
    "cosine_matrix",
    "cut_layer_shift",
    "ema",
    "gapsl_step",
    "identify_leaders",
    "num_leaders",
]

#: Valid values of ``algorithm.align_mode`` (the ``mode`` argument of `align`).
ALIGN_MODES: tuple[str, ...] = ("norm", "norm_exact", "linear", "pcgrad")

#: Default guard for divisions by norms; far below any gradient norm that matters.
DEFAULT_EPS: float = 1e-12


# --------------------------------------------------------------------------- helpers


def _check_matrix(g: Tensor, name: str = "g") -> tuple[int, int]:
    """Return ``(N, D)`` of a floating ``(N, D)`` tensor with ``N >= 1`` or raise."""
    if g.dim() != 2 or g.shape[0] < 1:
        raise ValueError(f"{name} must be a (N, D) matrix with N >= 1, got {tuple(g.shape)}")
    if not g.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {g.dtype}")
    return int(g.shape[0]), int(g.shape[1])


def _unit_rows(g: Tensor, eps: float) -> Tensor:
    """``g_i / max(||g_i||, eps)`` row by row; a zero row stays exactly zero (never NaN)."""
    return g / g.norm(dim=1, keepdim=True).clamp_min(eps)  # (N, D)


def _cos_to_unit(x: Tensor, x_norm: Tensor, u: Tensor, eps: float) -> Tensor:
    """``cos(x_i, u)`` for unit (or exactly zero) ``u``; 0 for zero rows or zero ``u``."""
    # (N, D) @ (D,) -> (N,); clamp because rounding can step just outside [-1, 1].
    return ((x @ u) / x_norm.clamp_min(eps)).clamp(-1.0, 1.0)  # (N,)


def num_leaders(n: int, rho: float) -> int:
    """Size of the leader set in rho mode: ``ceil(rho * n)``, at least 1 and at most n.

    ``rho * n`` is rounded to 9 decimals before the ceiling so that float noise does not
    add a leader: ``0.3 * 10`` is ``3.0000000000000004`` in binary floating point, whose
    plain ceiling would be 4.
    """
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"algorithm.rho must be in (0, 1], got {rho}")
    if n < 1:
        raise ValueError(f"the number of clients must be >= 1, got {n}")
    return min(n, max(1, math.ceil(round(rho * n, 9))))


# --------------------------------------------------------------------------- LGI


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on tensors is ambiguous
class LGIResult:
    """Outcome of leader gradient identification for one step.

    Attributes:
        consistency: ``(N,)`` ``s_i`` = mean over ``j != i`` of ``cos(g_i, g_j)``
            (0 when ``N = 1``).
        leader_mask: ``(N,)`` bool, True for the leaders.
        leader_grad: ``(D,)`` mean over the leaders of ``g_i`` (or of ``g_i / ||g_i||``
            when identified with ``normalize=True``).
    """

    consistency: Tensor  # (N,)
    leader_mask: Tensor  # (N,) bool
    leader_grad: Tensor  # (D,)


def cosine_matrix(g: Tensor, eps: float = DEFAULT_EPS) -> Tensor:
    """Pairwise cosine similarities of the rows of ``g``.

    Args:
        g: ``(N, D)`` one gradient vector per client.
        eps: norms are clamped to at least ``eps`` before dividing, so a zero row has
            cosine 0 with every row (itself included) instead of NaN.

    Returns:
        ``(N, N)`` symmetric matrix with entries in ``[-1, 1]``; the diagonal is 1 for
        non-zero rows and 0 for zero rows.
    """
    _check_matrix(g)
    unit = _unit_rows(g, eps)  # (N, D)
    cos = unit @ unit.T  # (N, N)
    # A matmul need not round (i, j) and (j, i) identically; averaging with the
    # transpose makes the matrix exactly symmetric (a + b == b + a in IEEE), so that
    # cos(g_i, g_j) is one number whichever client asks.
    cos = (cos + cos.T) / 2  # (N, N)
    return cos.clamp(-1.0, 1.0)


def identify_leaders(
    g: Tensor,
    rho: float = 0.5,
    tau: float | None = None,
    normalize: bool = False,
    eps: float = DEFAULT_EPS,
) -> LGIResult:
    """Leader gradient identification (LGI).

    Client ``i``'s consistency is ``s_i = mean_{j != i} cos(g_i, g_j)``: a client whose
    gradient agrees with most others is likely to follow the population objective,
    whereas a client with a skewed (non-IID) label distribution pulls elsewhere.

    Leader set:
        * ``tau is None`` (rho mode): the ``ceil(rho * N)`` clients with the highest
          ``s_i`` (see `num_leaders`); ties go to the lower client index (stable sort),
          so the choice is deterministic for given scores.
        * ``tau`` given (threshold mode, takes precedence over ``rho``): every client
          with ``s_i >= tau``; if none qualifies, the single best client (lowest index
          among equals), so there is always a leader.
        * ``N = 1``: ``s = [0]`` and client 0 leads.

    Args:
        g: ``(N, D)`` one gradient vector per client.
        rho: fraction of clients that lead in rho mode, in ``(0, 1]``.
        tau: consistency threshold; ``None`` selects rho mode.
        normalize: average unit-normalised leader gradients ``g_i / ||g_i||`` instead of
            the raw ones, so one leader with a large gradient cannot dominate the
            direction (zero rows stay zero).
        eps: division guard for norms, see `cosine_matrix`.

    Returns:
        `LGIResult` with ``consistency (N,)``, ``leader_mask (N,)`` and
        ``leader_grad (D,)``, all new tensors in ``g``'s dtype and device.

    The selection uses no host-device synchronisation (no ``.item()``, no boolean
    indexing), so it does not stall a CUDA stream.
    """
    n, _ = _check_matrix(g)
    if tau is None:
        k = num_leaders(n, rho)
    elif not math.isfinite(tau):
        raise ValueError(f"algorithm.tau must be a finite number or null, got {tau}")

    if n == 1:
        consistency = g.new_zeros(1)  # (1,) no other client to agree with
    else:
        off_diag = ~torch.eye(n, dtype=torch.bool, device=g.device)  # (N, N)
        cos = cosine_matrix(g, eps)  # (N, N)
        # Mask the diagonal out instead of subtracting it from the full row sum: it is
        # only approximately 1 (and 0 for a zero row), and subtracting a rounded 1 from
        # a sum of N terms would lose precision that ties and thresholds depend on.
        consistency = torch.where(off_diag, cos, 0.0).sum(dim=1) / (n - 1)  # (N,)

    # Stable descending sort: among equal scores the lower client index comes first.
    order = torch.sort(consistency, descending=True, stable=True).indices  # (N,)
    if tau is None:
        leader_mask = torch.zeros(n, dtype=torch.bool, device=g.device).index_fill(
            0, order[:k], True
        )  # (N,)
    else:
        above = consistency >= tau  # (N,)
        best = torch.zeros(n, dtype=torch.bool, device=g.device).index_fill(
            0, order[:1], True
        )  # (N,) fallback: the single most consistent client
        leader_mask = torch.where(above.any(), above, best)  # (N,)

    rows = _unit_rows(g, eps) if normalize else g  # (N, D)
    # where() rather than mask * rows: a non-finite non-leader row must not leak into
    # the leader gradient through 0 * inf = nan.
    leader_sum = torch.where(leader_mask[:, None], rows, 0.0).sum(dim=0)  # (D,)
    leader_grad = leader_sum / leader_mask.sum().to(rows.dtype)  # (D,) count >= 1
    return LGIResult(consistency=consistency, leader_mask=leader_mask, leader_grad=leader_grad)


# --------------------------------------------------------------------------- EMA


def ema(previous: Tensor | None, current: Tensor, beta: float) -> Tensor:
    """One step of an exponential moving average, without zero-initialisation bias.

    Args:
        previous: the running average, or ``None`` before the first step.
        current: this step's value, same shape as ``previous``.
        beta: weight of the past, in ``[0, 1]`` (0: no smoothing).

    Returns:
        ``current`` (as a new tensor) when ``previous`` is None, so the first leader
        gradient is used at full scale instead of being shrunk by ``1 - beta`` as a
        zero-initialised average would; otherwise
        ``beta * previous + (1 - beta) * current``. Neither input is modified.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"algorithm.beta must be in [0, 1], got {beta}")
    if previous is None:
        return current.clone()
    if previous.shape != current.shape:
        raise ValueError(
            f"EMA state shape {tuple(previous.shape)} does not match the current value "
            f"{tuple(current.shape)} (did the number of cut-layer features change?)"
        )
    return beta * previous + (1.0 - beta) * current


# --------------------------------------------------------------------------- GDA


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on tensors is ambiguous
class AlignResult:
    """Outcome of gradient direction alignment.

    Attributes:
        aligned: ``(N, D)`` the aligned gradients.
        cos_before: ``(N,)`` ``cos(g_i, leader)``.
        cos_after: ``(N,)`` ``cos(aligned_i, leader)``.
        strength: ``(N,)`` per-client pull strength used (``lambda_i`` for the norm
            modes, ``lam`` for linear, 1 where pcgrad projected and 0 elsewhere);
            0 everywhere when the leader is zero.
    """

    aligned: Tensor  # (N, D)
    cos_before: Tensor  # (N,)
    cos_after: Tensor  # (N,)
    strength: Tensor  # (N,)


def align(
    g: Tensor, leader: Tensor, lam: float, mode: str = "norm", eps: float = DEFAULT_EPS
) -> AlignResult:
    """Gradient direction alignment (GDA): pull each client gradient towards the leader.

    With ``c_i = cos(g_i, g_L)`` and ``u = g_L / ||g_L||``:

    * ``"norm"`` (default): ``lambda_i = lam * (1 - c_i) / 2`` (0 for a client already
      parallel to the leader, ``lam`` for an anti-parallel one) and
      ``aligned_i = (1 - lambda_i) g_i + lambda_i ||g_i|| u``, a convex combination of
      ``g_i`` and the leader direction scaled to ``||g_i||``. This does NOT preserve the
      norm: ``||aligned_i|| <= ||g_i||``, with equality only when ``lambda_i`` is 0 or
      1 (for ``0 < lam < 1`` and ``g_i != 0``: only when ``g_i`` is parallel to the
      leader); the more a client disagrees, the more its step shrinks.
    * ``"norm_exact"``: the ``"norm"`` direction rescaled to ``||g_i||``, so the norm IS
      preserved (up to rounding). Sole exception: ``g_i`` exactly anti-parallel to the
      leader with ``lambda_i = 1/2`` makes the combination the zero vector, which has no
      direction to rescale; it stays zero.
    * ``"linear"``: ``aligned_i = (1 - lam) g_i + lam g_L`` (``strength = lam``);
      this mixes in the leader's magnitude too, e.g. a zero ``g_i`` becomes ``lam g_L``.
    * ``"pcgrad"``: if ``c_i < 0``, ``aligned_i = g_i - (g_i . u) u`` (the conflicting
      component is projected out, leaving ``cos_after = 0``); otherwise unchanged.
      ``lam`` is unused (and not validated) in this mode.

    For ``lam > 0`` the norm modes and linear raise every client's cosine to the leader,
    strictly for any client that is neither parallel nor exactly anti-parallel to it (an
    exactly anti-parallel vector has no preferred direction to rotate in; it is only
    rescaled).

    Guarantees:
        * ``lam = 0`` returns ``g`` bit for bit in the modes that use ``lam`` (also with
          a zero leader or zero rows); more generally every row whose strength is 0 is
          copied from ``g`` unchanged, including the sign of zeros.
        * A zero leader (``||g_L|| <= eps``: all leaders' gradients vanish) has no
          direction, so every mode returns ``g`` unchanged with strength 0 and cosines 0.
        * Every division is guarded by ``eps``, so zero rows give finite results (no NaN).

    Args:
        g: ``(N, D)`` client gradients.
        leader: ``(D,)`` leader gradient (normally the EMA of `identify_leaders`'s).
        lam: alignment coefficient in ``[0, 1]``.
        mode: one of `ALIGN_MODES`.
        eps: division guard for norms.

    Returns:
        `AlignResult` (all new tensors; the inputs are not modified).

    Raises:
        ValueError: unknown ``mode`` (names ``algorithm.align_mode``), ``lam`` outside
            ``[0, 1]`` for a mode that uses it, or mismatched shapes.
    """
    if mode not in ALIGN_MODES:
        raise ValueError(
            f"algorithm.align_mode must be one of {', '.join(ALIGN_MODES)}; got {mode!r}"
        )
    _, d = _check_matrix(g)
    if tuple(leader.shape) != (d,):
        raise ValueError(f"leader must have shape (D,) = ({d},), got {tuple(leader.shape)}")
    if mode != "pcgrad" and not 0.0 <= lam <= 1.0:
        raise ValueError(f"algorithm.lam must be in [0, 1], got {lam}")

    g_norm = g.norm(dim=1)  # (N,)
    leader_norm = leader.norm()  # ()
    has_direction = leader_norm > eps  # () bool; False for a zero leader
    # The unit leader direction, or exactly zero when there is none; the clamp keeps the
    # division finite in the discarded branch of where().
    u = torch.where(has_direction, leader / leader_norm.clamp_min(eps), 0.0)  # (D,)
    cos_before = _cos_to_unit(g, g_norm, u, eps)  # (N,)

    if mode in ("norm", "norm_exact"):
        strength = lam * (1.0 - cos_before) / 2.0  # (N,) in [0, lam]
        # Everything below is finite for finite g (u is unit or zero), so a zero
        # strength multiplies finite numbers, never NaN.
        target = g_norm[:, None] * u[None, :]  # (N, D) leader direction at ||g_i||
        mixed = (1.0 - strength)[:, None] * g + strength[:, None] * target  # (N, D)
        if mode == "norm_exact":
            mixed_norm = mixed.norm(dim=1)  # (N,)
            mixed = mixed * (g_norm / mixed_norm.clamp_min(eps))[:, None]  # (N, D)
    elif mode == "linear":
        strength = torch.full_like(g_norm, lam)  # (N,)
        mixed = (1.0 - lam) * g + lam * leader[None, :]  # (N, D)
    else:  # pcgrad
        strength = (cos_before < 0).to(g.dtype)  # (N,) 1 = conflicting, projected
        mixed = g - (g @ u)[:, None] * u[None, :]  # (N, D) component along u removed

    strength = torch.where(has_direction, strength, 0.0)  # (N,) no leader, no pull
    # Copy untouched rows from g instead of trusting the arithmetic: 1 * x + 0 * y is x
    # only up to the sign of zero, and lam = 0 must reproduce PSL bit for bit.
    aligned = torch.where((strength == 0)[:, None], g, mixed)  # (N, D)
    cos_after = _cos_to_unit(aligned, aligned.norm(dim=1), u, eps)  # (N,)
    return AlignResult(
        aligned=aligned, cos_before=cos_before, cos_after=cos_after, strength=strength
    )


# --------------------------------------------------------------------------- cut layer


def batch_mean_flat(cut_grads: Tensor) -> Tensor:
    """Each client's batch-mean cut-layer gradient, flattened: ``(N, B, *F) -> (N, D)``.

    ``D = prod(F)`` (1 when ``F`` is empty). This is the per-client gradient vector
    ``g`` that LGI and GDA work on in the "cut" reading.
    """
    if cut_grads.dim() < 2 or cut_grads.shape[1] < 1:
        raise ValueError(f"cut_grads must be (N, B, *F) with B >= 1, got {tuple(cut_grads.shape)}")
    n = cut_grads.shape[0]
    return cut_grads.mean(dim=1).reshape(n, -1)  # (N, D)


def cut_layer_shift(cut_grads: Tensor, g: Tensor, aligned: Tensor) -> Tensor:
    """Apply the alignment of the batch means to every sample's cut-layer gradient.

    Args:
        cut_grads: ``(N, B, *F)`` per-sample cut-layer gradients of client ``i`` in
            row ``i``.
        g: ``(N, D)`` their batch means, ``batch_mean_flat(cut_grads)``, ``D = prod(F)``.
        aligned: ``(N, D)`` the aligned batch means (`align`'s ``aligned``).

    Returns:
        ``cut_grads + (aligned - g)`` with the difference reshaped to ``(N, 1, *F)``:
        every sample of client ``i`` is shifted by the same vector, so the batch mean
        becomes ``aligned_i`` while the per-sample deviations from the mean (the
        information about individual samples) are kept. Where the shift is exactly 0
        (in particular everywhere when ``aligned`` equals ``g``) the result is
        bit-for-bit ``cut_grads``. A new tensor; ``cut_grads`` is not modified.
    """
    if cut_grads.dim() < 2:
        raise ValueError(f"cut_grads must be (N, B, *F), got {tuple(cut_grads.shape)}")
    n = cut_grads.shape[0]
    feat = tuple(cut_grads.shape[2:])
    d = math.prod(feat)
    for name, t in (("g", g), ("aligned", aligned)):
        if tuple(t.shape) != (n, d):
            raise ValueError(
                f"{name} must have shape (N, D) = {(n, d)} for cut_grads "
                f"{tuple(cut_grads.shape)}, got {tuple(t.shape)}"
            )
    delta = (aligned - g).to(cut_grads.dtype).reshape(n, 1, *feat)  # (N, 1, *F)
    # x + 0.0 turns -0.0 into +0.0; selecting cut_grads where the shift is zero keeps
    # the identity exact, so lam = 0 is PSL to the last bit.
    return torch.where(delta == 0, cut_grads, cut_grads + delta)  # (N, B, *F)


# --------------------------------------------------------------------------- one step


@dataclass
class GapslConfig:
    """GAPSL hyper-parameters (the ``algorithm`` config group, ``align_mode`` -> ``mode``).

    Attributes:
        rho: fraction of clients that lead (rho mode), in ``(0, 1]``.
        tau: consistency threshold; when set it replaces ``rho``.
        normalize_leader: average unit-normalised leader gradients.
        beta: EMA factor of the leader gradient, in ``[0, 1]``.
        lam: alignment coefficient, in ``[0, 1]``; 0 reproduces PSL exactly.
        mode: alignment mode, one of `ALIGN_MODES`.
    """

    # No defaults here: the one set of defaults is the method's config
    # (`lightning_gapsl.methods.gapsl.GapslMethodConfig`, conf/algorithm/gapsl.yaml).
    rho: float
    tau: float | None
    normalize_leader: bool
    beta: float
    lam: float
    mode: str

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the ``algorithm.*`` key of the first invalid field."""
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"algorithm.rho must be in (0, 1], got {self.rho}")
        if self.tau is not None and not math.isfinite(self.tau):
            raise ValueError(f"algorithm.tau must be a finite number or null, got {self.tau}")
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"algorithm.beta must be in [0, 1], got {self.beta}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"algorithm.lam must be in [0, 1], got {self.lam}")
        if self.mode not in ALIGN_MODES:
            raise ValueError(
                f"algorithm.align_mode must be one of {', '.join(ALIGN_MODES)}; got {self.mode!r}"
            )


def gapsl_step(
    g: Tensor, ema_state: Tensor | None, cfg: GapslConfig
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One GAPSL step on the client gradient matrix: LGI, EMA of the leader, GDA.

    Args:
        g: ``(N, D)`` this step's client gradients.
        ema_state: ``(D,)`` the smoothed leader gradient from the previous step, or
            ``None`` on the first step.
        cfg: hyper-parameters (validated again here, since the dataclass is mutable).

    Returns:
        ``(aligned, new_ema_state, diagnostics)``: ``aligned (N, D)``; the new
        ``(D,)`` EMA state, to pass back next step (the old one is not modified); and
        the diagnostics, all tensors (no host sync): ``leader_mask (N,)`` bool,
        ``consistency (N,)``, ``cos_before_mean ()``, ``cos_after_mean ()``,
        ``leader_count ()`` int64.
    """
    cfg.validate()
    lgi = identify_leaders(g, rho=cfg.rho, tau=cfg.tau, normalize=cfg.normalize_leader)
    new_state = ema(ema_state, lgi.leader_grad, cfg.beta)  # (D,)
    # Align to the smoothed trend, not to this step's leaders alone: a single noisy
    # batch should not redirect every client.
    res = align(g, new_state, cfg.lam, cfg.mode)
    diagnostics = {
        "leader_mask": lgi.leader_mask,
        "consistency": lgi.consistency,
        "cos_before_mean": res.cos_before.mean(),
        "cos_after_mean": res.cos_after.mean(),
        "leader_count": lgi.leader_mask.sum(),
    }
    return res.aligned, new_state, diagnostics
