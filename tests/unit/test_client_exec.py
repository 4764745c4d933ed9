"""Unit tests (milliseconds): the batched client execution modes equal the loop.

``grouped`` (one grouped kernel per layer for all K clients) and ``vmap`` must give
every client the output and gradients of its own separate segment, within float32
rounding, for every LeNet cut and the ResNet-18 stem + first stage (cut 2); ``auto``
keeps the loop on CPU. The same comparison on CUDA is marked ``gpu``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lightning_gapsl.models.grouped import grouped_supported
from lightning_gapsl.models.split import build_client_segment, build_full_model
from lightning_gapsl.models.stacked import StackedSegments, resolve_mode

# (model, input shape, cut): every LeNet cut on 8x8 inputs, ResNet's stem + stage 1
# (cut 2, the GPU target's cut) and stage 2 (cut 3: strided convs, 1x1 shortcut).
CASES = [("lenet", (1, 8, 8), 1), ("lenet", (1, 8, 8), 2), ("lenet", (1, 8, 8), 3),
         ("resnet18", (3, 8, 8), 2), ("resnet18", (3, 8, 8), 3)]


def _run(segments: list[nn.Module], mode: str, x: torch.Tensor, seed: int = 1):
    """Outputs (K, B, *out) and flat gradients (K, D) of the stacked segments in ``mode``."""
    stacked = StackedSegments(segments, mode=mode).to(x.device)
    out = stacked(x)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    out.backward(upstream.to(x.device))
    return out.detach().cpu(), stacked.flat_grads().cpu()


def _check_modes_match_loop(device: torch.device, atol: float) -> None:
    for name, shape, cut in CASES:
        segments = [build_client_segment(name, shape, 10, cut, 0, c) for c in range(3)]
        x = torch.randn(3, 4, *shape, generator=torch.Generator().manual_seed(0)).to(device)
        ref_out, ref_grads = _run(segments, "loop", x)
        for mode in ("grouped", "vmap"):
            out, grads = _run(segments, mode, x)
            assert out.shape == ref_out.shape, (name, cut, mode)
            torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=atol, msg=(name, cut, mode))
            # Gradients are sums over B*H*W terms: rounding scales with their size.
            scale = float(ref_grads.abs().max())
            torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=atol * scale / 10,
                                       msg=(name, cut, mode))


def test_grouped_and_vmap_equal_loop_on_cpu() -> None:
    # oneDNN off: see the xfail below; with torch's own CPU convolutions every case agrees.
    with torch.backends.mkldnn.flags(enabled=False):
        _check_modes_match_loop(torch.device("cpu"), atol=1e-5)


def test_lenet_modes_equal_loop_with_onednn() -> None:
    """LeNet (the CPU benchmark model) agrees with oneDNN's default CPU kernels too."""
    for name, shape, cut in CASES[:3]:
        segments = [build_client_segment(name, shape, 10, cut, 0, c) for c in range(3)]
        x = torch.randn(3, 4, *shape, generator=torch.Generator().manual_seed(0))
        _, ref_grads = _run(segments, "loop", x)
        _, grads = _run(segments, "grouped", x)
        torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5)


def test_resnet_grouped_with_onednn_on_cpu() -> None:
    """With oneDNN's CPU kernels (torch's default) grouped ResNet gradients agree with the
    loop on most processors. On some (seen with torch 2.13 on one Intel family) the last
    client's weight gradients of the stem + stage 1 at K=3 are off by ~1%, vmap included,
    and turning oneDNN off fixes it: a kernel defect, not ours. The test accepts that case
    only when torch's own kernels then agree, so a real error of the grouping still fails."""
    segments = [build_client_segment("resnet18", (3, 8, 8), 10, 2, 0, c) for c in range(3)]
    x = torch.randn(3, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def grouped_matches_loop() -> bool:
        _, ref_grads = _run(segments, "loop", x)
        _, grads = _run(segments, "grouped", x)
        scale = float(ref_grads.abs().max())
        return torch.allclose(grads, ref_grads, rtol=1e-4, atol=1e-6 * scale)

    if grouped_matches_loop():
        return
    with torch.backends.mkldnn.flags(enabled=False):
        assert grouped_matches_loop(), "grouped != loop even with oneDNN off: a grouping bug"
    warnings.warn("this processor's oneDNN kernels give grouped ResNet gradients ~1% off; "
                  "torch's own kernels agree", stacklevel=1)


def test_grouped_gives_each_client_its_own_weights() -> None:
    """A wrong channel order (clients' channels interleaved) would mix clients: change
    client 1's weights only and only client 1's output may change."""
    segments = [build_client_segment("lenet", (1, 8, 8), 10, 2, 0, c) for c in range(3)]
    x = torch.randn(3, 4, 1, 8, 8)
    before = StackedSegments(segments, mode="grouped")(x).detach()
    with torch.no_grad():
        segments[1][0][0].weight.mul_(2.0)
    after = StackedSegments(segments, mode="grouped")(x).detach()
    assert torch.equal(before[0], after[0]) and torch.equal(before[2], after[2])
    assert not torch.allclose(before[1], after[1])


def test_full_lenet_runs_grouped() -> None:
    """FedAvg's clients hold the whole model: conv blocks, Flatten, Linear, logits."""
    segments = [build_full_model("lenet", (1, 8, 8), 10, 1, seed=c) for c in range(2)]
    x = torch.randn(2, 5, 1, 8, 8)
    torch.testing.assert_close(StackedSegments(segments, mode="grouped")(x),
                               StackedSegments(segments, mode="loop")(x), rtol=1e-5, atol=1e-5)


def test_auto_keeps_the_loop_on_cpu_and_groups_on_cuda() -> None:
    segments = [build_client_segment("lenet", (1, 8, 8), 10, 1, 0, c) for c in range(2)]
    stacked = StackedSegments(segments, mode="auto")
    assert stacked.resolved_mode(torch.device("cpu")) == "loop"
    assert resolve_mode(torch.device("cuda"), grouped_ok=True) == "grouped"
    assert resolve_mode(torch.device("cuda"), grouped_ok=False) == "vmap"
    x = torch.randn(2, 3, 1, 8, 8)
    assert torch.equal(stacked(x), StackedSegments(segments, mode="loop")(x))  # bitwise


def test_unsupported_layer_is_refused_for_grouped() -> None:
    segment = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert not grouped_supported(segment)
    with pytest.raises(ValueError, match="grouped"):
        StackedSegments([segment, segment], mode="grouped")
    with pytest.raises(ValueError, match="mode must be one of"):
        StackedSegments([segment], mode="batched")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_and_vmap_equal_loop_on_cuda() -> None:
    torch.backends.cudnn.allow_tf32 = False  # TF32 convs would differ by ~1e-3, not rounding
    torch.backends.cuda.matmul.allow_tf32 = False
    _check_modes_match_loop(torch.device("cuda"), atol=1e-4)
