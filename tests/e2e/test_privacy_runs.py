"""End-to-end tests (about a minute): the leakage evaluation through the real entry point
on digits. Every registered method has exposure flags and emits the ``privacy`` block
with ``privacy=fast``, every summary field documented; 1 and 3 processes give the same numbers; both defenses lower the
measured leakage of a briefly trained client (the instrument's positive controls)."""

from __future__ import annotations

import pytest

from lightning_gapsl.callbacks.summary_fields import undocumented
from lightning_gapsl.methods import method_names
from lightning_gapsl.privacy.exposure import FLAG_KEYS, exposure
from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow

# An epoch is each method's own (local-pass rounds and whole-epoch turns fix it): one
# pass over 640 training images.
TINY = [
    "data.num_clients=4",
    "trainer.max_epochs=1",
    "data.steps_per_epoch=null",
    "data.max_train=640",
    "trainer.threads=1",
    "data.val_fraction=0",
    "privacy=fast",
]
HEADLINE = (
    "leakage",
    "leakage_worst",
    "psnr",
    "ssim",
    "dcor",
    "threat",
    "exposure",
    "reference",
    "clients",
    "mean",
    "worst",
    "eval_s",
)


def test_every_registered_method_has_exposure_flags():
    for name in method_names():
        assert set(FLAG_KEYS) <= set(exposure(name)), name
        assert exposure(name)["threat"] in ("realistic", "bound"), name


@pytest.mark.parametrize("method", method_names())
def test_every_method_emits_the_privacy_keys(compose_cfg, method):
    cfg = compose_cfg(f"algorithm={method}", *TINY, "trainer.devices=1", name=method)
    summary = load_summary(run(cfg))
    assert undocumented(summary) == []  # docs/reference/summary.md lists every field
    privacy = summary["privacy"]
    assert set(HEADLINE) <= set(privacy), sorted(privacy)
    assert privacy["exposure"]["threat"] == privacy["threat"] == exposure(method)["threat"]
    assert privacy["reference"]["identity_ridge"]["psnr"] > privacy["reference"]["constant"]["psnr"]
    for entry in privacy["clients"].values():
        assert -0.1 < entry["ridge"]["leakage"] <= 1.0 + 1e-6
        assert -0.05 < entry["dcor"] <= 1.0 + 1e-6
    assert 0.0 < privacy["leakage"] < 1.0 and 0.0 < privacy["dcor"] < 1.0


def _privacy(compose_cfg, *overrides, name):
    cfg = compose_cfg("algorithm=psl", *TINY, *overrides, name=name)
    return load_summary(run(cfg))["privacy"]


def test_one_and_three_processes_give_the_same_leakage(compose_cfg):
    one = _privacy(compose_cfg, "trainer.devices=1", name="one")
    three = _privacy(compose_cfg, "trainer.devices=3", name="three")
    assert one["clients_evaluated"] == three["clients_evaluated"]
    for key in ("leakage", "psnr", "ssim", "dcor", "leakage_worst"):
        assert one[key] == pytest.approx(three[key], rel=1e-6, abs=1e-9), key


def test_noise_and_nopeek_lower_the_leakage_of_a_trained_client(compose_cfg):
    trained = ["trainer.devices=1", "trainer.max_epochs=2", "data.max_train=null"]
    plain = _privacy(compose_cfg, *trained, name="plain")
    noisy = _privacy(compose_cfg, *trained, "defense.activation_noise=1.0", name="noisy")
    nopeek = _privacy(compose_cfg, *trained, "defense.nopeek=5.0", name="nopeek")
    assert noisy["leakage"] < plain["leakage"] - 0.02, (noisy["leakage"], plain["leakage"])
    assert noisy["dcor"] < plain["dcor"]
    assert nopeek["dcor"] < plain["dcor"] - 0.05, (nopeek["dcor"], plain["dcor"])
    assert nopeek["leakage"] < plain["leakage"], (nopeek["leakage"], plain["leakage"])
