"""End-to-end equivalences (seconds): real Lightning runs in one process on digits.

- PSL with one client holding all the data is centralized training (same losses per step);
- GAPSL with lambda = 0 is PSL to the last bit, for both gradient readings.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_gapsl.train import run
from tests.conftest import load_summary

pytestmark = pytest.mark.slow


class Recorder(L.Callback):
    """Per-step training losses and the final parameters, as the trainer saw them."""

    def __init__(self):
        self.losses: list[float] = []
        self.state: dict[str, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train_loss"]))

    def on_fit_end(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


def _record(cfg) -> Recorder:
    rec = Recorder()
    run(cfg, extra_callbacks=[rec])
    return rec


def test_single_client_psl_is_centralized(compose_cfg):
    common = [
        "trainer.devices=1",
        "trainer.max_epochs=2",
        "data.num_clients=1",
        "trainer.threads=1",
    ]
    central = _record(compose_cfg("algorithm=centralized", *common, name="central"))
    psl = _record(compose_cfg("algorithm=psl", *common, name="psl"))
    assert len(central.losses) == len(psl.losses) > 50
    diffs = [abs(a - b) for a, b in zip(central.losses, psl.losses, strict=False)]
    assert max(diffs) < 1e-5, max(diffs)
    assert central.losses[-1] < central.losses[0]  # it trained


@pytest.mark.parametrize("reading", ["cut", "client"])
def test_gapsl_lambda_zero_is_psl_bit_for_bit(compose_cfg, reading):
    common = ["trainer.devices=1", "trainer.max_epochs=1", "data.num_clients=4"]
    psl = _record(compose_cfg("algorithm=psl", *common, name="psl"))
    gapsl = _record(
        compose_cfg(
            "algorithm=gapsl",
            f"algorithm.reading={reading}",
            "algorithm.lam=0",
            *common,
            name="gapsl",
        )
    )
    assert psl.losses == gapsl.losses
    assert psl.state.keys() == gapsl.state.keys() and len(psl.state) > 0
    for key in psl.state:
        assert torch.equal(psl.state[key], gapsl.state[key]), key
    # ... and lambda > 0 does change training (the test can fail).
    moved = _record(
        compose_cfg(
            "algorithm=gapsl",
            f"algorithm.reading={reading}",
            "algorithm.lam=0.5",
            *common,
            name="moved",
        )
    )
    assert moved.losses != psl.losses


class LrProbe(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        self.server_lr = pl_module.state.server_opt.param_groups[0]["lr"]
        self.client_lr = pl_module.state.client_opt.param_groups[0]["lr"]


def test_sglr_server_learning_rate_scales_with_clients(compose_cfg):
    probe = LrProbe()
    cfg = compose_cfg(
        "algorithm=sglr",
        "algorithm.lr_exponent=1.5",
        "optim.lr=0.01",
        "data.num_clients=4",
        "trainer.devices=1",
        "trainer.max_epochs=1",
        "data.steps_per_epoch=2",
    )
    run(cfg, extra_callbacks=[probe])
    assert probe.client_lr == pytest.approx(0.01)
    assert probe.server_lr == pytest.approx(0.01 * 4**1.5)  # SplitLr: N ** a


def test_splitfed_v1_is_fedavg(compose_cfg):
    """SplitFed V1 (per-client server copies, both halves averaged each round) computes
    exactly what FedAvg of the full model computes: the same losses and accuracies."""
    common = [
        "trainer.devices=1",
        "trainer.max_epochs=2",
        "data.num_clients=4",
        "trainer.threads=1",
        "algorithm.rounds=lockstep",
        "algorithm.round_steps=5",
        "data.steps_per_epoch=20",
    ]
    sfl = load_summary(run(compose_cfg("algorithm=sfl_v1", *common, name="sfl")))
    fed = load_summary(run(compose_cfg("algorithm=fedavg", *common, name="fed")))
    for h1, h2 in zip(sfl["history"], fed["history"], strict=False):
        assert abs(h1["train_loss"] - h2["train_loss"]) < 1e-5
        assert abs(h1["test_acc_mean"] - h2["test_acc_mean"]) < 1e-5
    # After the round-end average every client holds the same model: one global model.
    assert sfl["test_acc_global"] == sfl["test_acc_min"]
    assert sfl["test_acc_mean"] == pytest.approx(sfl["test_acc_global"], abs=1e-12)
    # Bytes by hand. 2 epochs x 20 steps, rounds of 5 steps: 8 rounds; N=4, B=16.
    # FedAvg: every round each client sends its full LeNet (13082 float32) up and down.
    full, segment = 13082, 224  # parameters: whole LeNet on 1x8x8, its first block
    assert fed["bytes_up"] == fed["bytes_down"] == 8 * 4 * full * 4
    # SplitFed V1: each step N*B activations (8x4x4 float32) + labels (int64) up, the
    # same activations' gradients down; each round the client segments up and down.
    per_step_up, per_step_down = 4 * 16 * (128 * 4 + 8), 4 * 16 * 128 * 4
    assert sfl["bytes_up"] == 40 * per_step_up + 8 * 4 * segment * 4
    assert sfl["bytes_down"] == 40 * per_step_down + 8 * 4 * segment * 4


def test_cse_fsl_and_fsl_sage_bytes_by_hand(compose_cfg):
    """Activations go up only every q=5 steps and no gradient comes down; CSE-FSL
    averages segment + head each round, FSL-SAGE averages the segment and sends fitted
    estimators down every l=2 rounds. 6 clients (digits default), B=16, 40 steps."""
    common = [
        "trainer.devices=1",
        "trainer.max_epochs=2",
        "data.steps_per_epoch=20",
        "algorithm.rounds=lockstep",
        "algorithm.round_steps=5",
        "algorithm.server_interval=5",
        "algorithm.server_steps=averaged",
    ]
    cse = load_summary(run(compose_cfg("algorithm=cse_fsl", *common, name="cse")))
    sage = load_summary(
        run(compose_cfg("algorithm=fsl_sage", "algorithm.align_interval=2", *common, name="sage"))
    )
    n, b, act, segment, head = 6, 16, 8 * 4 * 4, 224, 128 * 10 + 10
    uploads = 8 * n * b * (act * 4 + 8)  # steps 0, 5, ..., 35: activations + labels
    rounds = 8  # 40 steps / 5
    assert cse["bytes_up"] == uploads + rounds * n * (segment + head) * 4
    assert cse["bytes_down"] == rounds * n * (segment + head) * 4  # model averages only
    assert sage["bytes_up"] == uploads + rounds * n * segment * 4
    alignments = 4  # after rounds 1, 3, 5, 7
    assert sage["bytes_down"] == rounds * n * segment * 4 + alignments * n * head * 4
    assert cse["history"][-1]["train_loss"] < cse["history"][0]["train_loss"]
    assert sage["history"][-1]["train_loss"] < sage["history"][0]["train_loss"]


def test_sequential_sl_passes_one_segment_bytes_by_hand(compose_cfg):
    """SL with one-batch turns: 5 clients take turns with one segment; every turn sends
    activations + labels up and the gradient down, and every hand-off but the very first
    moves the segment's 224 parameters (counted leaving and arriving). B=16, 2 epochs x
    10 steps."""
    sl = load_summary(
        run(
            compose_cfg(
                "algorithm=sl",
                "algorithm.turns=batch",
                "data.num_clients=5",
                "trainer.devices=1",
                "trainer.max_epochs=2",
                "data.steps_per_epoch=10",
                name="sl",
            )
        )
    )
    turns, handoffs, act = 20 * 5, 20 * 5 - 1, 8 * 4 * 4
    assert sl["bytes_up"] == turns * 16 * (act * 4 + 8) + handoffs * 224 * 4
    assert sl["bytes_down"] == turns * 16 * act * 4 + handoffs * 224 * 4
    # One segment for everybody: every client's model is the same model.
    # (The mean of N equal floats may differ from them in the last bit.)
    assert sl["test_acc_global"] == sl["test_acc_min"] > 0.3
    assert sl["test_acc_mean"] == pytest.approx(sl["test_acc_global"], abs=1e-12)
