"""End-to-end tests (about 15 s): bad command lines, through the real entry point.

Each command line runs ``lgapsl-train``'s `main` in this process (no subprocess per
case: the same code path, seconds instead of minutes) and must exit non-zero at
start-up with exactly one line on stderr that names the key or file and what would be
valid, no traceback, and nothing written to the existing output folder it was given.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from lightning_gapsl import train
from tests.conftest import DIGITS
from tests.fake_data import write_cifar10, write_leaf

pytestmark = pytest.mark.slow

FAST = ["data.steps_per_epoch=3", "data.num_clients=4", "trainer.threads=1"]

# (overrides, text the one line must contain). {ckpt}, {other}, {trunc}, {foreign},
# {missing}, {unwritable}, {cifar_partial}, {leaf_bad}, {partition}, {bad_partition} and
# the {trace_*} files are filled in by the test.
CASES = [
    (["algorithm=nope"], "algorithm='nope' is not valid; choose one of: centralized"),
    (["data=imagenet"], "data='imagenet' is not valid; choose one of: cifar10, cifar100, digits"),
    (["model=vgg"], "model='vgg' is not valid; choose one of: lenet, module, resnet18"),
    (["optim=lion"], "optim='lion' is not valid; choose one of: adam, method, sgd"),
    (["logger=tensorboard"], "logger='tensorboard' is not valid; choose one of: csv, none"),
    (["data.nope=1"], "unknown key data.nope; valid keys under data: name"),
    (["+trainer.gpus=2"], "unknown key trainer.gpus; valid keys under trainer:"),
    (["epochs=3"], "unknown key epochs; valid top-level keys:"),
    (["data.partition=random"], "data.partition='random' is not valid; choose one of: iid"),
    (["data.num_clients=0"], "data.num_clients=0 must be >= 1"),
    (["data.num_clients=four"], "data.num_clients='four' is not a valid int"),
    (["data.alpha=nan"], "data.alpha=nan is not a valid finite number"),
    (["data.alpha=-1"], "data.alpha=-1.0 must be > 0"),
    (["optim.lr=inf"], "optim.lr=inf is not a valid finite number"),
    (["optim.momentum=1.5"], "optim.momentum=1.5 must be in [0, 1)"),
    (["algorithm.lam=2"], "algorithm.lam=2.0 must be in [0, 1]"),
    (["trainer.devices=0"], "trainer.devices=0 must be >= 1"),
    (["trainer.devices=9"], "trainer.devices=9 gives 8 client ranks but data.num_clients=4"),
    (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5 is not a valid int"),
    (["trainer.timeout_s=nan"], "trainer.timeout_s=nan is not a valid finite number"),
    (["trainer.threads=0"], "trainer.threads=0 must be >= 1 or null"),
    (["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is not valid; choose one of: cpu"),
    (["trainer.progress_bar=maybe"], "trainer.progress_bar='maybe' is not a valid bool"),
    (["data.val_fraction=0.7"], "data.val_fraction=0.7 must be in [0, 0.5)"),
    (["seed=-1"], "seed=-1 must be in [0, 4294967295]"),
    (["seed=4294967296"], "seed=4294967296 must be in [0, 4294967295]"),
    (["latency.uplink_bps=-5"], "latency.uplink_bps=-5.0 must be > 0"),
    (["latency.downlink_bps=0"], "latency.downlink_bps=0.0 must be > 0"),
    (["latency.client_flops=inf"], "latency.client_flops=inf is not a valid finite number"),
    (["latency.server_flops=-1e9"], "latency.server_flops=-1000000000.0 must be > 0"),
    (["latency.client_hetero=-0.5"], "latency.client_hetero=-0.5 must be >= 0"),
    (["model.cut_layer=7"], "model.cut_layer"),
    (
        [
            "algorithm=fsl_sage",
            "algorithm.aux_model=next_stage",
            "model.cut_layer=3",
            "data.steps_per_epoch=null",
        ],
        "algorithm.aux_model=next_stage copies the server's next block, but model.cut_layer=3",
    ),
    (
        ["algorithm=sl", "algorithm.turns=half"],
        "algorithm.turns='half' is not valid; choose one of: epoch, batch",
    ),
    (
        ["algorithm=sfl_v2", "algorithm.turn_order=size", "data.steps_per_epoch=null"],
        "algorithm.turn_order='size' is not valid; choose one of: id, random",
    ),
    (["algorithm=sl"], "data.steps_per_epoch is for algorithm.turns=batch"),
    (
        ["algorithm=sfl_v2", "data.steps_per_epoch=null", "algorithm.rounds=lockstep"],
        "algorithm.rounds=lockstep / round_steps=None are for algorithm.turns=batch",
    ),
    (["seed=abc"], "seed='abc' is not a valid int"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode='sometimes' is not valid"),
    (["data.alpha=["], "cannot parse override 'data.alpha=['"),
    (["algorithm=centralized", "trainer.devices=3"], "algorithm=centralized runs in one process"),
    (["ckpt_path={missing}"], "ckpt_path='{missing}': no such file"),
    (["data=cifar10", "data.root={missing}"], "{missing}"),
    (
        ["data=cifar10", "data.root={cifar_partial}"],
        "data.root={cifar_partial} lacks data_batch_4; set data.root=/path/to/cifar-10-batches-py",
    ),
    (["data=cifar100", "data.root={cifar_partial}"], "lacks train, test; set data.root="),
    (["data=cifar10", "data.label_kind=coarse"], "data.label_kind=coarse is for data=cifar100"),
    (["data.label_kind=medium"], "data.label_kind='medium' is not valid; choose one of: fine"),
    (
        ["data=leaf", "data.root={leaf_bad}", "data.num_clients=2"],
        "LEAF file {leaf_bad}/train/b.json: user 'u1' has 2 x rows, 1 labels and num_samples 2",
    ),
    (["data=leaf", "data.root={missing}"], "data.root={missing} lacks the folder train/"),
    (["data.partition=natural"], "data.partition=natural needs a per-sample group id"),
    (
        ["data.partition=shards", "data.quantity_sigma=1"],
        "data.quantity_sigma=1.0 applies to data.partition=iid or dirichlet, not shards",
    ),
    (["data.quantity_sigma=-1"], "data.quantity_sigma=-1.0 must be >= 0"),
    (
        ["data.alpha=0.01", "data.min_client_size=300"],
        "data.partition=dirichlet: 10 seeded draws with data.alpha=0.01",
    ),
    (["data.partition_file={missing}"], "data.partition_file='{missing}': no such file"),
    (
        ["data.partition_file={bad_partition}"],
        "data.partition_file={bad_partition} is not a partition file",
    ),
    (
        ["data.partition_file={partition}", "data.num_clients=3"],
        "data.partition_file={partition} holds 4 clients but data.num_clients=3",
    ),
    (
        ["data.partition_file={partition}", "data.val_fraction=0.2"],
        "data.partition_file={partition} was written for other training data",
    ),
    (["participation.fraction=0"], "participation.fraction=0.0 must be in (0, 1]"),
    (["participation.fraction=1.5"], "participation.fraction=1.5 must be in (0, 1]"),
    (["participation.clients=5"], "participation.clients=5 must be in [1, data.num_clients=4]"),
    (["participation.dropout=-0.1"], "participation.dropout=-0.1 must be in [0, 1)"),
    (["participation.deadline_s=0"], "participation.deadline_s=0.0 must be > 0 or null"),
    (
        ["algorithm=sl", "data.steps_per_epoch=null", "participation.fraction=0.5"],
        "partial participation (participation.*) with algorithm=sl needs algorithm.turns=batch",
    ),
    (
        ["algorithm=centralized", "participation.fraction=0.5"],
        "algorithm=centralized does not support partial participation yet",
    ),
    (["latency.trace={missing}"], "latency.trace={missing}: no such file (give a JSON device"),
    (["latency.trace={trace_bad_json}"], "latency.trace={trace_bad_json} is not a readable JSON"),
    (
        ["latency.trace={trace_short}"],
        "latency.trace={trace_short} does not cover client ids 3 of data.num_clients=4; "
        "it needs one entry for every id 0..3",
    ),
    (
        ["latency.trace={trace_slow}"],
        "latency.trace={trace_slow}: client 2 has flops=0; it must be a finite number > 0",
    ),
    (
        ["latency.trace={trace_no_link}"],
        "latency.trace={trace_no_link}: client 2 has uplink_bps=-1.0; it must be a finite",
    ),
    (
        ["algorithm=centralized", "latency.trace={trace_windows}"],
        "algorithm=centralized does not support partial participation yet",
    ),
    (
        ["data=fmnist", "data.root={missing}"],
        "Fashion-MNIST file {missing}/train-images-idx3-ubyte.gz (or {missing}/train-images-idx3-"
        "ubyte) is missing; install it with `apt-get install dataset-fashion-mnist`",
    ),
    (["output_dir={unwritable}"], "output_dir='{unwritable}' is not writable"),
    (["ckpt_path={trunc}"], "checkpoint {trunc} is corrupt or truncated"),
    (["ckpt_path={foreign}"], "checkpoint {foreign} was not written by lightning_gapsl"),
    (
        ["data.num_clients=5", "ckpt_path={ckpt}"],
        "checkpoint {ckpt} is from a different configuration: data was",
    ),
    (["trainer.devices=3", "ckpt_path={ckpt}"], "trainer.devices was 1, this run has 3"),
    (["privacy=bogus"], "privacy='bogus' is not valid; choose one of: fast, full, off"),
    (["privacy=fast", "privacy.pool_size=2"], "privacy.pool_size=2 must be >= 8"),
    (["+privacy.nope=1"], "unknown key privacy.nope; valid keys under privacy:"),
    (["defense.activation_noise=-1"], "defense.activation_noise=-1.0 must be >= 0"),
    (["defense.activation_noise=nan"], "defense.activation_noise=nan is not a valid finite"),
    (["defense.nopeek=-0.5"], "defense.nopeek=-0.5 must be >= 0"),
    (
        ["algorithm=fedavg", "defense.activation_noise=1", "data.steps_per_epoch=null"],
        "defense.activation_noise is for methods that send smashed data; algorithm=fedavg",
    ),
    (
        ["algorithm=fsl_sage", "defense.nopeek=1", "data.steps_per_epoch=null"],
        "defense.nopeek is implemented for algorithm=psl|gapsl",
    ),
]


class Foreign:
    """A pickled object that weights_only loading refuses."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A real checkpoint (1 process, 1 epoch) and broken or foreign files beside it."""
    root = tmp_path_factory.mktemp("bad_input")
    cfg = train.compose(
        [*DIGITS, *FAST, "trainer.devices=1", "trainer.max_epochs=1"], str(root / "first")
    )
    train.run(cfg)
    ckpt = root / "first" / "checkpoints" / "last.ckpt"
    (root / "trunc.ckpt").write_bytes(ckpt.read_bytes()[:2000])
    torch.save({"state_dict": {}, "payload": Foreign()}, root / "foreign.ckpt")
    cifar_partial = write_cifar10(root / "cifar")
    (cifar_partial / "data_batch_4").unlink()
    write_leaf(root / "leaf", users=2, files=1)
    (root / "leaf" / "train" / "b.json").write_text(
        json.dumps(
            {
                "users": ["u1"],
                "num_samples": [2],
                "user_data": {"u1": {"x": [[0.0] * 784] * 2, "y": [3]}},
            }
        )
    )
    (root / "bad_partition.json").write_text('{"clients": [[0]]}')
    return {
        **_traces(root),
        "ckpt": ckpt,
        "trunc": root / "trunc.ckpt",
        "foreign": root / "foreign.ckpt",
        "missing": root / "does-not-exist",
        "unwritable": "/proc/version/run",
        "root": root,
        "cifar_partial": cifar_partial,
        "leaf_bad": root / "leaf",
        "partition": root / "first" / "partition.json",
        "bad_partition": root / "bad_partition.json",
    }


def _traces(root: Path) -> dict[str, Path]:
    """Device traces for 4 clients, each broken in one way (or valid, with windows)."""
    good = [{"id": i, "flops": 1e10, "uplink_bps": 1e7, "downlink_bps": 5e7} for i in range(4)]
    variants = {
        "trace_short": good[:3],
        "trace_slow": [*good[:2], {**good[2], "flops": 0}, good[3]],
        "trace_no_link": [*good[:2], {**good[2], "uplink_bps": -1.0}, good[3]],
        "trace_windows": [{**good[0], "available": [[0, 1]]}, *good[1:]],
    }
    paths = {"trace_bad_json": root / "trace_bad_json.json"}
    paths["trace_bad_json"].write_text('{"clients": [')
    for name, clients in variants.items():
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps({"clients": clients}))
    return paths


def _snapshot(folder: Path) -> list:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.parametrize("overrides, expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_command_line(overrides, expected, files, tmp_path, monkeypatch, capfd):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "results.txt").write_text("earlier results\n")
    before = _snapshot(existing) + [existing.stat().st_mtime_ns]
    args = [arg.format(**files) for arg in overrides]
    if not any(arg.startswith("output_dir=") for arg in args):
        args.append(f"output_dir={existing}")
    monkeypatch.chdir(tmp_path)  # Hydra's own run folder, if it gets that far, goes here
    monkeypatch.setattr(
        sys,
        "argv",
        ["lgapsl-train", "data=digits", "logger=none", "trainer.progress_bar=false", *FAST, *args],
    )
    with pytest.raises(SystemExit) as exited:
        train.main()
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exited.value.code not in (0, None)
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    assert expected.format(**files) in lines[0], lines[0]
    assert "Traceback" not in err
    assert _snapshot(existing) + [existing.stat().st_mtime_ns] == before


def test_slurm_task_count_mismatch(files, tmp_path, monkeypatch, capfd):
    """Inside a 2-task srun step, ``trainer.devices=3`` stops before any rank starts."""
    for var in [v for v in os.environ if v.startswith(("SLURM", "TORCHELASTIC"))]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "lgapsl")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "lgapsl-train",
            "data=digits",
            "logger=none",
            *FAST,
            "trainer.devices=3",
            f"output_dir={tmp_path / 'out'}",
        ],
    )
    with pytest.raises(SystemExit) as exited:
        train.main()
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert exited.value.code == 2
    assert lines == [lines[0]] and "trainer.devices=3 but this SLURM job runs 2 tasks" in lines[0]
    shutil.rmtree(tmp_path / "outputs", ignore_errors=True)
