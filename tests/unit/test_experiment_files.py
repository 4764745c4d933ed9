"""Unit tests (seconds): every run an experiment file of experiments/ asks for is a valid config.

`compare` validates every planned run before the first starts (`check_runs`); here the
same check runs on every experiment file, so a default that moves under a variant fails the
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
from lightning_gapsl.compare import Tuner, check_runs, missing_experiment, planned_runs
from lightning_gapsl.tuning import GridError, experiment_grid

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_CONF = ROOT / "experiments" / "conf"
EXPERIMENTS = sorted(p.stem for p in (EXPERIMENTS_CONF / "experiment").glob("*.yaml"))
FULL_GRID = "tune_mnist20_dir01"


def _experiment(name: str) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        raw = hydra_compose(
            config_name="compare",
            overrides=[f"experiment={name}", f"hydra.searchpath=[file://{EXPERIMENTS_CONF}]"],
        )
    return OmegaConf.to_container(raw.experiment, resolve=True)


def test_the_files_are_found():
    assert {"baselines_iid", FULL_GRID, "tune_common"} <= set(EXPERIMENTS)


def test_the_package_ships_no_experiment_file():
    assert not (Path(config_dir()) / "experiment").exists()


def test_a_missing_experiment_is_one_line_naming_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a folder without experiments/: as from a wheel install
    assert "experiment= is required" in missing_experiment([])
    line = missing_experiment(["experiment=tune_mnist20_dir01"])
    assert str(tmp_path / "experiments" / "conf" / "experiment") in line
    assert "hydra.searchpath=" in line
    found = missing_experiment(
        ["experiment=tune_mnist20_dir01", f"hydra.searchpath=[file://{EXPERIMENTS_CONF}]"]
    )
    assert found is None
    typo = missing_experiment(
        ["experiment=tune_mnist20", f"hydra.searchpath=[file://{EXPERIMENTS_CONF}]"]
    )
    assert "no tune_mnist20.yaml" in typo and "tune_mnist20_dir01" in typo


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
