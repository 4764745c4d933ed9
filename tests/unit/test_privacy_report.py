"""Unit tests (about a second): the privacy table and pictures from summary blocks built by
the real `summarize` on hand-made rows."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_gapsl.privacy.evaluate import SCALARS, SHOWN, PrivacyData, reconstructions, summarize
from lightning_gapsl.privacy.report import load_recon, privacy_markdown, write_privacy

REFS = {
    "constant": {"psnr": 10.0, "psnr_median": 10.0, "ssim": 0.2, "mse": 0.1, "dcor": 0.0},
    "identity_ridge": {"psnr": 50.0, "psnr_median": 50.0, "ssim": 1.0, "mse": 1e-5, "dcor": 1.0},
}


def _rows(psnrs: list[float | None], shape=(1, 4, 4)) -> torch.Tensor:
    width = len(SCALARS) + 2 * SHOWN * math.prod(shape)
    rows = torch.full((len(psnrs), width), math.nan, dtype=torch.float64)
    for c, p in enumerate(psnrs):
        if p is not None:
            rows[c, :7] = torch.tensor([1.0, 0.5, p, p, 0.6, 0.01, 0.1], dtype=torch.float64)
            rows[c, len(SCALARS) : len(SCALARS) + SHOWN * 16] = 0.5
    return rows


def test_summarize_aggregates_mean_and_worst_client():
    block = summarize(_rows([20.0, None, 30.0]), REFS, "psl", "fast", 1.0)
    assert block["clients_evaluated"] == [0, 2]
    assert block["leakage"] == pytest.approx(0.375)  # mean of (20-10)/40 and (30-10)/40
    assert block["worst"]["client"] == 2 and block["leakage_worst"] == pytest.approx(0.5)
    assert block["leakage_ssim"] == pytest.approx(0.5)  # (0.6 - 0.2) / (1 - 0.2)
    assert block["threat"] == "bound" and block["exposure"]["client_weights"] == "never"
    assert "conv" not in block["clients"]["0"]


def test_table_and_pictures(tmp_path):
    blocks = [summarize(_rows([20.0, 30.0]), REFS, m, "fast", 1.0) for m in ("psl", "fedavg")]
    summaries = [
        {
            "algorithm": m,
            "test_acc_mean": 0.9,
            "bytes_up": 1e6,
            "bytes_down": 1e6,
            "epochs": 1,
            "privacy": b,
        }
        for m, b in zip(("psl", "fedavg"), blocks, strict=False)
    ]
    text = privacy_markdown(summaries, ["psl", "fedavg"], "t")
    assert "| psl | 1 | 90.00 | 2.0 | 0.375 | 0.500 |" in text
    assert "realistic" in text and "*reference: constant*" in text
    data = PrivacyData(*(torch.zeros(10, 1, 4, 4),) * 4)
    for m in ("psl", "fedavg"):
        (tmp_path / m).mkdir()
        torch.save(reconstructions(_rows([20.0, 30.0]), data), tmp_path / m / "privacy_recon.pt")
    recons = [load_recon(tmp_path / "psl"), load_recon(tmp_path / "fedavg")]
    paths = write_privacy(summaries, ["psl", "fedavg"], recons, tmp_path, "t")
    assert [p.name for p in paths] == [
        "privacy.md",
        "privacy_acc_vs_leakage.png",
        "privacy_reconstructions.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
