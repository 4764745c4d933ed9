"""Bring your own method, data set, model and metric: a package outside the repository,
loaded with ``plugins=``, from the CLI in 1 and 3 processes and through
`lightning_gapsl.run`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PLUGIN = Path(__file__).with_name("example_plugin.py")
COMMON = [
    "plugins=[my_plugin]",
    "algorithm=half_psl",
    "data=blobs64",
    "model=module",
    "model.target=my_plugin.mlp",
    "model.cut=act",
    "data.num_clients=4",
    "data.partition=iid",
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "logger=none",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "trainer.ckpt_every=0",
]
SAME = (
    "test_acc_mean",
    "val_acc_mean",
    "train_loss_final",
    "bytes_up",
    "bytes_down",
    "test_top2_mean",
    "val_top2_mean",
)


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user_code")  # outside the repository
    shutil.copy(PLUGIN, folder / "my_plugin.py")
    return folder


def _cli(plugin_dir: Path, out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)])}
    proc = subprocess.run(
        [sys.executable, "-m", "lightning_gapsl.train", *COMMON, *extra, f"output_dir={out}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=plugin_dir,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "summary.json").read_text())


def test_a_plugin_runs_from_the_cli_in_one_and_three_processes(plugin_dir, tmp_path):
    one = _cli(plugin_dir, tmp_path / "one", "trainer.devices=1")
    three = _cli(plugin_dir, tmp_path / "three", "trainer.devices=3")
    assert one["algorithm"] == "half_psl" and one["num_clients"] == 4
    assert {k: one[k] for k in SAME} == {k: three[k] for k in SAME}
    assert 0 < one["test_top2_mean"] <= 1 and one["test_top2_mean"] >= one["test_acc_mean"]
    assert one["test_acc_mean"] > 0.5  # four separable blobs: learnt, not chance (0.25)
    record = one["history"][-1]
    assert len(record["client_test_top2"]) == 4


def test_the_python_entry_point_takes_the_model_and_data_as_objects(
    plugin_dir, tmp_path, monkeypatch, registries_restored
):
    import lightning_gapsl

    monkeypatch.syspath_prepend(str(plugin_dir))
    import my_plugin

    split = my_plugin.load_blobs(None, 0)
    tensors = {
        "train_x": split.train_x,
        "train_y": split.train_y,
        "test_x": split.test_x,
        "test_y": split.test_y,
    }
    overrides = [o for o in COMMON if not o.startswith(("data=", "model=", "model.target"))]
    summary = lightning_gapsl.run(
        [*overrides, "trainer.devices=1"],
        model=my_plugin.mlp,
        data=tensors,
        output_dir=str(tmp_path / "api"),
    )
    cli = _cli(plugin_dir, tmp_path / "cli", "trainer.devices=1")
    assert {k: summary[k] for k in SAME} == {k: cli[k] for k in SAME}


def test_data_tensors_reads_a_saved_dict_of_any_sample_shape(plugin_dir, tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 3, 5, generator=gen)  # (n, 3, 5): neither images nor flat
    y = (x.sum(dim=(1, 2)) > 0).long()
    torch.save(
        {"train_x": x[:240], "train_y": y[:240], "test_x": x[240:], "test_y": y[240:]},
        tmp_path / "d.pt",
    )
    overrides = [o for o in COMMON if not o.startswith(("data=", "model.target"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)])}
    (plugin_dir / "flat_net.py").write_text(
        "from torch import nn\n"
        "def build(shape, classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(15, 8), nn.ReLU(), nn.Linear(8, classes))\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_gapsl.train",
            *overrides,
            "data=tensors",
            f"data.path={tmp_path / 'd.pt'}",
            "model.target=flat_net.build",
            "model.cut=2",
            "trainer.devices=1",
            f"output_dir={tmp_path / 'run'}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=plugin_dir,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_clients"] == 4 and summary["test_acc_mean"] > 0.6


def test_a_plugin_that_cannot_be_imported_stops_the_cli_naming_it(plugin_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(REPO)])}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_gapsl.train",
            "plugins=[no_such_plugin_module]",
            "trainer.devices=1",
            f"output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=plugin_dir,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "plugins: cannot import 'no_such_plugin_module'" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["model=module", "model.target=my_plugin.mlp", "model.cut=fc9"],
            (
                "model.cut='fc9' is not a child of model module my_plugin.mlp; choose a name or index "
                "of: fc1, act, fc2"
            ),
        ),
        (["data=tensors"], "data=tensors needs data.path=FILE"),
        (["model=module"], "model=module needs model.target=pkg.module.fn"),
        (
            ["model=module", "model.target=my_plugin.nothing_here"],
            "model.target='my_plugin.nothing_here' cannot be imported",
        ),
    ],
)
def test_bad_plugin_input_names_the_key(
    plugin_dir, tmp_path, monkeypatch, registries_restored, overrides, message
):
    """The checks the CLI runs before any rank starts (`train.preflight`), in-process."""
    from lightning_gapsl.train import USER_ERRORS, compose, preflight

    monkeypatch.syspath_prepend(str(plugin_dir))
    with pytest.raises(USER_ERRORS) as err:
        preflight(
            compose(
                [
                    "plugins=[my_plugin]",
                    "data=blobs64",
                    "trainer.devices=1",
                    "logger=none",
                    *overrides,
                ],
                str(tmp_path),
            )
        )
    assert message in str(err.value)


def test_a_runconfig_built_in_python_trains_as_the_same_cli_run(tmp_path):
    """One source of defaults: the method's optimizer and every other default are the same
    whether the config comes from the command line or from the dataclasses."""
    from lightning_gapsl.config import DataConfig, LoggerConfig, RunConfig, TrainerConfig
    from lightning_gapsl.methods import get_method
    from lightning_gapsl.train import compose, run

    data = {"name": "digits", "num_clients": 4, "max_train": 400}
    trainer = {"devices": 1, "max_epochs": 1, "progress_bar": False, "threads": 1, "ckpt_every": 0}
    cli = compose(
        [
            "algorithm=psl",
            "logger=none",
            *(f"data.{k}={v}" for k, v in data.items()),
            *(f"trainer.{k}={v}" for k, v in trainer.items()),
        ],
        str(tmp_path / "cli"),
    )
    python = RunConfig(
        algorithm=get_method("psl").config(),
        data=DataConfig(**data),
        trainer=TrainerConfig(**trainer),
        logger=LoggerConfig(name="none"),
        output_dir=str(tmp_path / "py"),
    )
    assert python.optim.name == "adam"  # PSL's own optimizer, not the OptimConfig default
    got = [json.loads(run(c).read_text()) for c in (cli, python)]
    assert {k: got[0][k] for k in SAME[:5]} == {k: got[1][k] for k in SAME[:5]}
