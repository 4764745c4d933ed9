"""Unit tests (milliseconds): GAPSL's LGI, EMA, GDA and cut-layer shift on tiny tensors.

The expected values are worked out by hand on 2-D examples (see the comments); the
property tests (cosines rise, norms behave as documented, lam = 0 is the identity bit
for bit) use small seeded random matrices.
"""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gapsl.methods.gapsl.math import (
    ALIGN_MODES,
    GapslConfig,
    align,
    batch_mean_flat,
    cosine_matrix,
    cut_layer_shift,
    ema,
    gapsl_step,
    identify_leaders,
    num_leaders,
)

LAM_MODES = ("norm", "norm_exact", "linear")  # the modes that use lam

# Hand-checkable hyper-parameters for the pure step (the method's defaults live in
# lightning_gapsl/methods/gapsl.py).
HAND = {"rho": 0.5, "tau": None, "normalize_leader": False, "beta": 0.9, "lam": 0.5, "mode": "norm"}


def five_clients() -> torch.Tensor:
    """3 clients roughly along +x, 2 along -x (float64 so hand values match to 1e-12)."""
    return torch.tensor(
        [[1.0, 0.1], [1.0, -0.1], [1.0, 0.0], [-1.0, 0.05], [-1.0, -0.05]],
        dtype=torch.float64,
    )  # (5, 2)


def random_g(n: int = 8, d: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=dtype)  # (N, D)


def bits(t: torch.Tensor) -> torch.Tensor:
    """Raw bit pattern, so -0.0 and +0.0 differ (torch.equal treats them as equal)."""
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


# --------------------------------------------------------------------------- cosine


def test_cosine_matrix_values_zero_rows_and_symmetry() -> None:
    g = torch.tensor([[3.0, 4.0], [4.0, -3.0], [0.0, 0.0], [-6.0, -8.0]])  # (4, 2)
    cos = cosine_matrix(g)
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0, -1.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],  # the zero row: cos 0 with everything, itself included
            [-1.0, 0.0, 0.0, 1.0],
        ]
    )
    torch.testing.assert_close(cos, expected, rtol=0, atol=1e-6)
    assert torch.isfinite(cos).all()
    assert torch.equal(cos, cos.T)


# --------------------------------------------------------------------------- LGI


def test_num_leaders_is_ceil_rho_n_without_float_noise() -> None:
    assert num_leaders(5, 0.5) == 3  # ceil(2.5)
    assert num_leaders(10, 0.3) == 3  # 0.3 * 10 = 3.0000000000000004 in binary
    assert num_leaders(4, 1.0) == 4
    assert num_leaders(3, 0.01) == 1  # at least one leader
    assert num_leaders(1, 0.5) == 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="algorithm.rho"):
            num_leaders(4, bad)


def test_lgi_rho_picks_the_three_plus_x_clients() -> None:
    res = identify_leaders(five_clients(), rho=0.5)
    assert res.leader_mask.dtype == torch.bool
    assert res.leader_mask.tolist() == [True, True, True, False, False]
    # Mean of the three +x gradients: the y components cancel.
    torch.testing.assert_close(
        res.leader_grad, torch.tensor([1.0, 0.0], dtype=torch.float64), rtol=0, atol=1e-15
    )


def test_lgi_consistency_by_hand() -> None:
    s = identify_leaders(five_clients()).consistency
    n01 = math.sqrt(1.01)  # ||(1, +-0.1)||
    n005 = math.sqrt(1.0025)  # ||(-1, +-0.05)||
    # Client 2 = (1, 0): cos with clients 0, 1 is 1/n01; with clients 3, 4 it is -1/n005.
    s2 = (2.0 / n01 - 2.0 / n005) / 4.0
    # Client 0 = (1, 0.1): dots 1 - 0.01, 1, -1 + 0.005, -1 - 0.005 with the others.
    s0 = (0.99 / 1.01 + 1.0 / n01 + (-0.995 - 1.005) / (n01 * n005)) / 4.0
    # Client 3 = (-1, 0.05): dots -0.995, -1.005, -1 with +x clients, 1 - 0.0025 with 4.
    s3 = ((-0.995 - 1.005) / (n005 * n01) - 1.0 / n005 + 0.9975 / 1.0025) / 4.0
    assert abs(s[2].item() - s2) < 1e-12
    assert abs(s[0].item() - s0) < 1e-12
    assert abs(s[3].item() - s3) < 1e-12
    # Mirror-image clients score the same.
    assert abs(s[0].item() - s[1].item()) < 1e-12
    assert abs(s[3].item() - s[4].item()) < 1e-12


def test_lgi_tau_threshold_and_fallback() -> None:
    g = five_clients()
    s = identify_leaders(g).consistency
    # s2 ~ -0.0019 > s0 = s1 ~ -0.0031 >> s3 = s4 ~ -0.498.
    assert s[2] > s[0] and s[0] > s[3]
    assert identify_leaders(g, tau=-0.1).leader_mask.tolist() == [True, True, True, False, False]
    # Between s0 and s2: only client 2 qualifies.
    only2 = identify_leaders(g, tau=-0.0025)
    assert only2.leader_mask.tolist() == [False, False, True, False, False]
    torch.testing.assert_close(only2.leader_grad, g[2], rtol=0, atol=0)
    # Nobody reaches 0.5: the single best client (2) leads.
    fallback = identify_leaders(g, tau=0.5)
    assert fallback.leader_mask.tolist() == [False, False, True, False, False]
    # Everyone qualifies at tau = -1.
    assert identify_leaders(g, tau=-1.0).leader_mask.all()
    # tau overrides rho.
    assert identify_leaders(g, rho=1.0, tau=-0.1).leader_mask.sum().item() == 3
    with pytest.raises(ValueError, match="algorithm.tau"):
        identify_leaders(g, tau=float("nan"))


def test_lgi_normalize_averages_unit_vectors() -> None:
    g = five_clients()
    res = identify_leaders(g, rho=0.5, normalize=True)
    # Unit vectors of (1, +-0.1) have x = 1/sqrt(1.01); (1, 0) is already unit.
    expected_x = (2.0 / math.sqrt(1.01) + 1.0) / 3.0
    torch.testing.assert_close(
        res.leader_grad, torch.tensor([expected_x, 0.0], dtype=torch.float64), rtol=0, atol=1e-12
    )
    # Unequal magnitudes: raw mean is dominated by the big gradient, unit mean is not.
    h = torch.tensor([[10.0, 0.0], [0.0, 1.0]])
    raw = identify_leaders(h, rho=1.0).leader_grad
    unit = identify_leaders(h, rho=1.0, normalize=True).leader_grad
    torch.testing.assert_close(raw, torch.tensor([5.0, 0.5]), rtol=0, atol=0)
    torch.testing.assert_close(unit, torch.tensor([0.5, 0.5]), rtol=0, atol=0)


def test_lgi_ties_go_to_the_lower_index_deterministically() -> None:
    # Four axis vectors: every client scores exactly (0 - 1 + 0) / 3 = -1/3.
    axes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for _ in range(5):
        res = identify_leaders(axes, rho=0.5)
        assert torch.equal(res.consistency, torch.full((4,), -1.0 / 3.0))
        assert res.leader_mask.tolist() == [True, True, False, False]
    # Threshold fallback on a tie also takes the lowest index.
    assert identify_leaders(axes, tau=0.9).leader_mask.tolist() == [True, False, False, False]
    # Whatever the order of the rows, the lowest indices win among equals.
    assert identify_leaders(axes.flip(0), rho=0.25).leader_mask.tolist() == [
        True,
        False,
        False,
        False,
    ]
    # Duplicated gradients: every client has cos 1 with one other and 0 with two.
    dup = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    res = identify_leaders(dup, rho=0.5)
    assert torch.equal(res.consistency, torch.full((4,), 1.0 / 3.0))
    assert res.leader_mask.tolist() == [True, True, False, False]


def test_lgi_single_client() -> None:
    g = torch.tensor([[2.0, -1.0, 0.5]])
    res = identify_leaders(g, rho=0.5)
    assert res.consistency.tolist() == [0.0]
    assert res.leader_mask.tolist() == [True]
    assert torch.equal(res.leader_grad, g[0])
    assert identify_leaders(g, tau=0.9).leader_mask.tolist() == [True]


def test_lgi_zero_rows_stay_finite_and_inputs_untouched() -> None:
    g = torch.zeros(3, 4)
    before = g.clone()
    res = identify_leaders(g, rho=0.5, normalize=True)
    assert torch.equal(g, before)
    assert torch.equal(res.consistency, torch.zeros(3))
    assert res.leader_mask.tolist() == [True, True, False]
    assert torch.equal(res.leader_grad, torch.zeros(4))


# --------------------------------------------------------------------------- EMA


def test_ema_first_call_returns_current_without_bias() -> None:
    cur = torch.tensor([3.0, -2.0])
    out = ema(None, cur, beta=0.9)
    assert torch.equal(out, cur)
    assert out is not cur  # a new tensor: the state never aliases the caller's buffer


def test_ema_second_call_by_hand() -> None:
    prev = torch.tensor([1.0, 2.0], dtype=torch.float64)
    cur = torch.tensor([3.0, -2.0], dtype=torch.float64)
    snapshot = (prev.clone(), cur.clone())
    out = ema(prev, cur, beta=0.9)
    # 0.9 * (1, 2) + 0.1 * (3, -2) = (0.9 + 0.3, 1.8 - 0.2) = (1.2, 1.6)
    torch.testing.assert_close(
        out, torch.tensor([1.2, 1.6], dtype=torch.float64), rtol=0, atol=1e-15
    )
    assert torch.equal(prev, snapshot[0]) and torch.equal(cur, snapshot[1])
    assert torch.equal(ema(prev, cur, beta=0.0), cur)


def test_ema_rejects_bad_beta_and_shapes() -> None:
    with pytest.raises(ValueError, match="algorithm.beta"):
        ema(None, torch.zeros(2), beta=1.5)
    with pytest.raises(ValueError, match="EMA state shape"):
        ema(torch.zeros(3), torch.zeros(2), beta=0.5)


# --------------------------------------------------------------------------- GDA by hand


def test_norm_mode_hand_example() -> None:
    # g = (0, 1) is orthogonal to the leader (1, 0): c = 0, lambda = 0.5 * (1 - 0) / 2 =
    # 0.25, aligned = 0.75 * (0, 1) + 0.25 * ||g|| * (1, 0) = (0.25, 0.75), all exact.
    res = align(torch.tensor([[0.0, 1.0]]), torch.tensor([1.0, 0.0]), lam=0.5, mode="norm")
    assert torch.equal(res.aligned, torch.tensor([[0.25, 0.75]]))
    assert torch.equal(res.strength, torch.tensor([0.25]))
    assert torch.equal(res.cos_before, torch.tensor([0.0]))
    # cos((0.25, 0.75), (1, 0)) = 0.25 / sqrt(0.625)
    assert abs(res.cos_after.item() - 0.25 / math.sqrt(0.625)) < 1e-6
    # Norm shrinks: sqrt(0.625) < 1.
    assert abs(res.aligned.norm().item() - math.sqrt(0.625)) < 1e-7


def test_norm_mode_uses_the_leader_direction_not_its_magnitude() -> None:
    # Leader (4, 0) vs (1, 0): only the direction matters in the norm modes.
    g = torch.tensor([[0.0, 2.0]])
    a = align(g, torch.tensor([4.0, 0.0]), lam=0.5).aligned
    b = align(g, torch.tensor([1.0, 0.0]), lam=0.5).aligned
    # 0.75 * (0, 2) + 0.25 * 2 * (1, 0) = (0.5, 1.5)
    assert torch.equal(a, torch.tensor([[0.5, 1.5]]))
    assert torch.equal(a, b)


def test_norm_mode_antiparallel_is_only_rescaled() -> None:
    # c = -1 -> lambda = lam = 0.25; aligned = 0.75 * (0, 2) + 0.25 * 2 * (0, -1) = (0, 1):
    # an exactly anti-parallel gradient has no direction to rotate in, so cos stays -1.
    res = align(torch.tensor([[0.0, 2.0]]), torch.tensor([0.0, -5.0]), lam=0.25)
    assert torch.equal(res.aligned, torch.tensor([[0.0, 1.0]]))
    assert res.strength.item() == 0.25
    assert res.cos_before.item() == -1.0 and res.cos_after.item() == -1.0


def test_norm_exact_hand_example_and_degenerate_antiparallel() -> None:
    res = align(torch.tensor([[0.0, 2.0]]), torch.tensor([1.0, 0.0]), lam=0.5, mode="norm_exact")
    # Direction of (0.5, 1.5) rescaled to norm 2: (1, 3) * 2 / sqrt(10).
    expected = torch.tensor([[1.0, 3.0]]) * (2.0 / math.sqrt(10.0))
    torch.testing.assert_close(res.aligned, expected, rtol=0, atol=1e-6)
    # Documented exception: anti-parallel with lambda = 1/2 gives the zero vector, which
    # has no direction to rescale; it stays zero (finite, no NaN).
    deg = align(torch.tensor([[0.0, 2.0]]), torch.tensor([0.0, -1.0]), lam=0.5, mode="norm_exact")
    assert torch.equal(deg.aligned, torch.zeros(1, 2))
    assert deg.cos_after.item() == 0.0


def test_linear_and_pcgrad_hand_examples() -> None:
    g = torch.tensor([[0.0, 1.0], [-1.0, 1.0], [2.0, 1.0]])
    leader = torch.tensor([2.0, 0.0])
    lin = align(g, leader, lam=0.5, mode="linear")
    # 0.5 * g_i + 0.5 * (2, 0)
    assert torch.equal(lin.aligned, torch.tensor([[1.0, 0.5], [0.5, 0.5], [2.0, 0.5]]))
    assert torch.equal(lin.strength, torch.full((3,), 0.5))
    pc = align(g, leader, lam=0.5, mode="pcgrad")
    # Only client 1 conflicts (g . u = -1): (-1, 1) - (-1) * (1, 0) = (0, 1).
    assert torch.equal(pc.aligned, torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 1.0]]))
    assert torch.equal(pc.strength, torch.tensor([0.0, 1.0, 0.0]))
    assert pc.cos_after[1].item() == 0.0


# --------------------------------------------------------------------------- GDA properties


@pytest.mark.parametrize("mode", LAM_MODES)
@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0])
def test_alignment_raises_every_cosine(mode: str, lam: float) -> None:
    for seed in range(5):
        g = random_g(seed=seed)
        leader = random_g(n=1, seed=100 + seed)[0]
        res = align(g, leader, lam=lam, mode=mode)
        assert torch.isfinite(res.aligned).all()
        assert (res.cos_after >= res.cos_before - 1e-6).all()
        misaligned = res.cos_before < 1 - 1e-4
        assert misaligned.any()
        assert (res.cos_after[misaligned] > res.cos_before[misaligned]).all()


def test_pcgrad_projects_only_conflicting_clients() -> None:
    g = random_g(n=16, seed=3)
    leader = random_g(n=1, seed=4)[0]
    res = align(g, leader, lam=0.5, mode="pcgrad")
    neg = res.cos_before < 0
    assert neg.any() and (~neg).any()
    assert (res.cos_after[neg].abs() < 1e-6).all()
    assert (res.cos_after >= -1e-6).all()
    assert torch.equal(res.aligned[~neg], g[~neg])
    assert torch.equal(res.strength, neg.to(g.dtype))


def test_pcgrad_ignores_lam() -> None:
    g = random_g(seed=5)
    leader = random_g(n=1, seed=6)[0]
    ref = align(g, leader, lam=0.5, mode="pcgrad").aligned
    for lam in (0.0, 1.0, 7.0):  # not validated either: pcgrad does not use it
        assert torch.equal(align(g, leader, lam=lam, mode="pcgrad").aligned, ref)


def test_norm_exact_preserves_norms() -> None:
    for seed in range(5):
        g = random_g(seed=seed)
        leader = random_g(n=1, seed=50 + seed)[0]
        for lam in (0.1, 0.5, 1.0):
            out = align(g, leader, lam=lam, mode="norm_exact").aligned
            torch.testing.assert_close(out.norm(dim=1), g.norm(dim=1), rtol=1e-6, atol=1e-6)


def test_norm_mode_shrinks_unless_parallel() -> None:
    g = random_g(n=6, seed=7, dtype=torch.float64)
    leader = random_g(n=1, seed=8, dtype=torch.float64)[0]
    g = torch.cat([g, 3.0 * leader[None, :]])  # client 6 is parallel to the leader
    lam = 0.6
    res = align(g, leader, lam=lam, mode="norm")
    g_norm = g.norm(dim=1)
    out_norm = res.aligned.norm(dim=1)
    assert (out_norm <= g_norm * (1 + 1e-12)).all()
    # Strictly smaller for every non-parallel client (0 < lam < 1) ...
    assert (out_norm[:6] < g_norm[:6]).all()
    # ... and equal for the parallel one (c = 1 up to rounding, so lambda ~ 0).
    assert res.strength[6].item() < 1e-12
    torch.testing.assert_close(out_norm[6], g_norm[6], rtol=1e-12, atol=0)
    torch.testing.assert_close(res.aligned[6], g[6], rtol=1e-12, atol=1e-12)
    # Exactly the closed form ||a||^2 = ||g||^2 ((1-l)^2 + l^2 + 2 l (1-l) c).
    c, lam_i = res.cos_before, res.strength
    expected = g_norm * torch.sqrt((1 - lam_i) ** 2 + lam_i**2 + 2 * lam_i * (1 - lam_i) * c)
    torch.testing.assert_close(out_norm, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lam_i, lam * (1 - c) / 2, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- identities


def _tricky_g() -> torch.Tensor:
    """Random rows plus an all-zero row and a row of negative zeros."""
    g = random_g(n=5, d=6, seed=11)
    g[1] = 0.0
    g[3] = -0.0
    g[0, 2] = -0.0
    return g  # (5, 6)


@pytest.mark.parametrize("mode", LAM_MODES)
@pytest.mark.parametrize("leader_kind", ["random", "zero"])
def test_lam_zero_is_bitwise_identity(mode: str, leader_kind: str) -> None:
    g = _tricky_g()
    leader = random_g(n=1, d=6, seed=12)[0] if leader_kind == "random" else torch.zeros(6)
    before = g.clone()
    res = align(g, leader, lam=0.0, mode=mode)
    assert torch.equal(res.aligned, g)
    assert torch.equal(bits(res.aligned), bits(g))  # sign of zeros kept too
    assert torch.equal(res.strength, torch.zeros(5))
    assert torch.equal(bits(g), bits(before))  # input untouched


@pytest.mark.parametrize("mode", ALIGN_MODES)
def test_zero_leader_leaves_g_unchanged(mode: str) -> None:
    g = _tricky_g()
    res = align(g, torch.zeros(6), lam=0.5, mode=mode)
    assert torch.equal(bits(res.aligned), bits(g))
    assert torch.equal(res.strength, torch.zeros(5))
    assert torch.equal(res.cos_before, torch.zeros(5))
    assert torch.equal(res.cos_after, torch.zeros(5))


@pytest.mark.parametrize("mode", ALIGN_MODES)
def test_zero_client_rows_give_no_nan(mode: str) -> None:
    g = _tricky_g()
    leader = random_g(n=1, d=6, seed=13)[0]
    res = align(g, leader, lam=0.5, mode=mode)
    for t in (res.aligned, res.cos_before, res.cos_after, res.strength):
        assert torch.isfinite(t).all()
    if mode == "linear":  # linear mixes in the leader itself: 0.5 * 0 + 0.5 * leader
        torch.testing.assert_close(res.aligned[1], 0.5 * leader, rtol=0, atol=0)
    else:  # the others scale by ||g_i|| = 0 or project a zero vector: stays zero
        assert torch.equal(res.aligned[1], torch.zeros(6))


def test_unknown_mode_names_the_config_key() -> None:
    with pytest.raises(ValueError, match="algorithm.align_mode") as info:
        align(torch.ones(2, 3), torch.ones(3), lam=0.5, mode="slerp")
    for mode in ALIGN_MODES:
        assert mode in str(info.value)


@pytest.mark.parametrize("mode", LAM_MODES)
def test_lam_out_of_range_rejected(mode: str) -> None:
    with pytest.raises(ValueError, match="algorithm.lam"):
        align(torch.ones(2, 3), torch.ones(3), lam=1.5, mode=mode)


def test_align_rejects_mismatched_leader() -> None:
    with pytest.raises(ValueError, match="leader"):
        align(torch.ones(2, 3), torch.ones(4), lam=0.5)


# --------------------------------------------------------------------------- cut layer


def _cut_grads(seed: int = 20) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    cut = torch.randn(4, 5, 3, 2, 2, generator=gen)  # (N, B, C, H, W)
    cut[0, 1, 0, 0, 0] = -0.0
    cut[2, :, 1] = -0.0  # a whole feature map of negative zeros in client 2
    return cut


def test_batch_mean_flat_shape_and_values() -> None:
    cut = _cut_grads()
    g = batch_mean_flat(cut)
    assert g.shape == (4, 12)
    torch.testing.assert_close(g[1], cut[1].mean(0).flatten(), rtol=0, atol=0)
    assert batch_mean_flat(torch.ones(3, 2)).shape == (3, 1)  # no feature dims: D = 1


def test_cut_layer_shift_sets_the_batch_mean_and_keeps_deviations() -> None:
    cut = _cut_grads()
    before = cut.clone()
    g = batch_mean_flat(cut)  # (N, D)
    res = align(g, random_g(n=1, d=12, seed=21)[0], lam=0.7, mode="norm")
    out = cut_layer_shift(cut, g, res.aligned)
    assert out.shape == cut.shape
    torch.testing.assert_close(batch_mean_flat(out), res.aligned, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        out - out.mean(1, keepdim=True), cut - cut.mean(1, keepdim=True), rtol=1e-5, atol=1e-6
    )
    assert torch.equal(bits(cut), bits(before))


def test_cut_layer_shift_identity_when_aligned_equals_g() -> None:
    cut = _cut_grads()
    g = batch_mean_flat(cut)
    out = cut_layer_shift(cut, g, g.clone())
    assert torch.equal(out, cut)
    assert torch.equal(bits(out), bits(cut))


@pytest.mark.parametrize("mode", LAM_MODES)
def test_lam_zero_through_cut_layer_shift_is_bitwise_psl(mode: str) -> None:
    cut = _cut_grads()
    g = batch_mean_flat(cut)
    res = align(g, random_g(n=1, d=12, seed=22)[0], lam=0.0, mode=mode)
    out = cut_layer_shift(cut, g, res.aligned)
    assert torch.equal(out, cut)
    assert torch.equal(bits(out), bits(cut))


def test_cut_layer_shift_rejects_bad_shapes() -> None:
    cut = _cut_grads()
    with pytest.raises(ValueError, match="aligned"):
        cut_layer_shift(cut, torch.zeros(4, 12), torch.zeros(4, 11))


# --------------------------------------------------------------------------- one step


def test_gapsl_step_first_and_second_step() -> None:
    g = five_clients()
    cfg = GapslConfig(**HAND)  # rho 0.5, beta 0.9, lam 0.5, norm
    aligned, state, diag = gapsl_step(g, None, cfg)
    # First step: the EMA is the leader gradient itself, (1, 0).
    assert torch.equal(state, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(aligned, align(g, state, 0.5, "norm").aligned)
    assert set(diag) == {
        "leader_mask",
        "consistency",
        "cos_before_mean",
        "cos_after_mean",
        "leader_count",
    }
    assert diag["leader_mask"].tolist() == [True, True, True, False, False]
    assert diag["leader_count"].item() == 3
    assert diag["cos_after_mean"] > diag["cos_before_mean"]
    # Second step: the state passed in is not modified, the new one is the EMA.
    g2 = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    snapshot = state.clone()
    _, state2, diag2 = gapsl_step(g2, state, cfg)
    assert torch.equal(state, snapshot)
    # Leaders: the two (0, 1) clients (scores 1/2 vs 0) -> leader grad (0, 1);
    # EMA = 0.9 * (1, 0) + 0.1 * (0, 1).
    assert diag2["leader_mask"].tolist() == [True, True, False]
    torch.testing.assert_close(
        state2, torch.tensor([0.9, 0.1], dtype=torch.float64), rtol=0, atol=1e-15
    )


def test_gapsl_step_lam_zero_is_psl() -> None:
    g = _tricky_g()
    aligned, _, _ = gapsl_step(g, None, GapslConfig(**{**HAND, "lam": 0.0}))
    assert torch.equal(bits(aligned), bits(g))


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("rho", 0.0, "algorithm.rho"),
        ("tau", float("inf"), "algorithm.tau"),
        ("beta", -0.1, "algorithm.beta"),
        ("lam", 2.0, "algorithm.lam"),
        ("mode", "bogus", "algorithm.align_mode"),
    ],
)
def test_gapsl_config_validation(field: str, value: object, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        GapslConfig(**{**HAND, field: value})  # type: ignore[arg-type]
    cfg = GapslConfig(**HAND)
    setattr(cfg, field, value)  # mutated after construction: gapsl_step re-validates
    with pytest.raises(ValueError, match=key):
        gapsl_step(torch.ones(2, 3), None, cfg)
