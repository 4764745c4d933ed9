"""Unit tests (seconds): every run a shipped experiment file asks for is a valid config.

`compare` validates every planned run before the first starts (`check_runs`); here the
same check runs on every shipped file, so a default that moves under a variant fails the
suite instead of a user's comparison. The tune_* files share one grid (tune_common): it is
checked whole under one setting, and each other setting with every method's first point.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lightning_gapsl.cli import config_dir
from lightning_gapsl.compare import Tuner, check_runs, planned_runs
from lightning_gapsl.tuning import GridError, experiment_grid

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
FULL_GRID = "tune_mnist20_dir01"


def _experiment(name: str) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        raw = hydra_compose(config_name="compare", overrides=[f"experiment={name}"])
    return OmegaConf.to_container(raw.experiment, resolve=True)


def test_the_files_are_found():
    assert {"baselines_iid", FULL_GRID, "tune_common"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_run_of_an_experiment_file_is_valid(name, tmp_path):
    exp = _experiment(name)
    if "grid" in exp and not exp.get("setting"):  # the shared part of the tune_* files
        with pytest.raises(GridError, match="has no setting"):
            Tuner(exp, tmp_path, threads=1)
        return
    if "grid" in exp and name != FULL_GRID and name != "tune_digits_smoke":
        grid = experiment_grid(exp)  # every row's first point, replaced rows included
        exp["grid"] = {m: dict([next(iter(points.items()))]) for m, points in grid.items()}
        exp.pop("replace_grid", None)
    check_runs(exp, tmp_path, stage="long" if "long_epochs" in exp else "all")


def test_an_invalid_variant_is_named_before_anything_runs(tmp_path):
    exp = _experiment("baselines_iid")
    exp["variants"]["broken"] = ["algorithm=sfl_v2", "algorithm.rounds=lockstep"]
    with pytest.raises(GridError, match=r"baselines_iid, run broken: algorithm.rounds=lockstep"):
        check_runs(exp, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was started


def test_every_seed_and_grid_point_is_planned(tmp_path):
    exp = _experiment("tune_digits_smoke")
    runs = planned_runs(exp, tmp_path)
    points = sum(len(p) for p in exp["grid"].values())
    assert len(runs) == points + len(exp["seeds"])
    assert all(f"seed={s}" in runs for s in exp["seeds"])
