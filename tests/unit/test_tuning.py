"""Unit tests (milliseconds; the config checks about a second): the tuning protocol of
`compare` on hand-made summaries. Grid checks, selection on validation, failed-seed
reporting, resume, and the experiment files themselves. No training process starts here;
tests/e2e/test_compare_tune.py runs one tiny real tuning."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lightning_gapsl import compare, tuning
from lightning_gapsl.tuning import GridError, Run


def summary(test=0.9, val=0.9, val_min=None, loss=0.1, **extra) -> dict:
    return {
        "test_acc_mean": test,
        "test_acc_min": test - 0.1,
        "val_acc_mean": val,
        "val_acc_min": val - 0.1 if val_min is None and val is not None else val_min,
        "train_loss_final": loss,
        "bytes_up": 2e6,
        "bytes_down": 1e6,
        "sim_latency_s": 3.0,
        "wall_s": 5.0,
        **extra,
    }


def run(point: str, s: dict | None, cause: str | None = None, seed: int = 0) -> Run:
    return Run(
        "m", point, seed, [f"x={point}"], summary=s, cause=cause, returncode=None if s else 1
    )


# ---------------------------------------------------------------- grid


def test_equal_grid_sizes_pass_and_unequal_ones_name_the_method():
    grid = {"psl": {"a": ["optim.lr=1"], "b": []}, "gapsl": {"a": [], "b": []}}
    assert tuning.check_grid(grid) == 2
    grid["sglr"] = {"a": [], "b": [], "c": []}
    grid["epsl"] = {"a": [], "b": []}
    with pytest.raises(GridError, match=r"sglr has 3 grid points; the others have 2"):
        tuning.check_grid(grid)


@pytest.mark.parametrize(
    "bad", ["trainer.max_epochs=9", "data.alpha=1", "seed=3", "algorithm=psl", "+data.max_train=5"]
)
def test_a_point_may_not_change_the_setting_or_the_budget(bad):
    with pytest.raises(GridError, match=r"grid point psl/a sets"):
        tuning.check_grid({"psl": {"a": ["optim.lr=1", bad]}})


def test_optional_unregistered_method_is_skipped_others_refused():
    grid = {"psl": {}, "epsl": {}}
    run_, skipped = tuning.active_methods(grid, ["epsl"], ["psl", "gapsl"])
    assert run_ == ["psl"] and "skipping epsl: algorithm=epsl is not registered" in skipped[0]
    with pytest.raises(GridError, match="grid method epsl is not a registered algorithm"):
        tuning.active_methods(grid, [], ["psl"])


def test_a_row_may_run_another_rows_algorithm():
    grid = {"gapsl": {}, "gapsl_aggregation_free": {}}
    run_, _ = tuning.active_methods(grid, [], ["gapsl"], {"gapsl_aggregation_free": "gapsl"})
    assert run_ == ["gapsl", "gapsl_aggregation_free"]
    with pytest.raises(GridError, match="algorithm_of names row gapsl_af, which has no grid"):
        tuning.active_methods(grid, [], ["gapsl"], {"gapsl_af": "gapsl"})


def test_a_not_run_row_is_skipped_with_its_reason():
    grid = {"psl": {}, "sl": {}}
    run_, skipped = tuning.active_methods(
        grid, [], ["psl", "sl"], None, {"sl": "no partial participation yet"}
    )
    assert run_ == ["psl"]
    assert skipped == ["Not run in this setting: sl (no partial participation yet)."]
    with pytest.raises(GridError, match="not_run names row fedavg, which has no grid"):
        tuning.active_methods(grid, [], ["psl", "sl"], None, {"fedavg": "x"})


# ---------------------------------------------------------------- selection


def test_validation_chooses_even_where_test_disagrees():
    points = [
        run("test_best", summary(test=0.95, val=0.80)),
        run("val_best", summary(test=0.85, val=0.90)),
    ]
    chosen, criterion = tuning.select(points)
    assert chosen.point == "val_best" and criterion.startswith("val_acc_mean")


def test_ties_on_val_mean_go_to_val_min_then_grid_order():
    a = run("a", summary(val=0.9, val_min=0.5))
    b = run("b", summary(val=0.9, val_min=0.7))
    c = run("c", summary(val=0.9, val_min=0.7))
    assert tuning.select([a, b, c])[0] is b


def test_failed_points_rank_last_and_crashed_ones_are_never_chosen():
    chance = run("chance", summary(test=0.1, val=0.95), cause="at chance")
    crashed = run("crashed", None, cause="crashed (exit 1): x")
    fine = run("fine", summary(val=0.5))
    assert tuning.select([chance, crashed, fine])[0] is fine
    assert tuning.select([crashed]) == (None, "none finished")


def test_without_validation_numbers_the_training_loss_decides_never_test():
    points = [
        run("test_best", summary(test=0.99, val=None, loss=0.5)),
        run("low_loss", summary(test=0.80, val=None, loss=0.2)),
    ]
    chosen, criterion = tuning.select(points)
    assert chosen.point == "low_loss" and criterion.startswith("train_loss_final")


# ---------------------------------------------------------------- failures


def test_failure_causes():
    assert tuning.failure_cause(summary(test=0.5), 0, [], 10) is None
    chance = tuning.failure_cause(summary(test=0.098, loss=math.nan), 0, [], 10)
    assert chance == "at chance: test acc 0.098 < 0.150; non-finite loss"
    slow = tuning.failure_cause(summary(test=0.1, loss=2.3024), 0, [], 10)
    assert slow == "at chance: test acc 0.100 < 0.150; final train loss 2.302"
    log = ["step 3", "error: training loss became nan at step 41: client 7 first", ""]
    assert tuning.failure_cause(None, 1, log, 10) == (
        "crashed (exit 1): non-finite loss: "
        "error: training loss became nan at step 41: client 7 first"
    )
    assert tuning.failure_cause(None, -9, ["epoch 1", "Killed"], 10) == "crashed (exit -9): Killed"


def test_failed_seed_is_flagged_listed_and_shown_with_and_without():
    runs = [
        Run("sfl_v2", "p", s, ["optim.lr=1"], summary=summary(test=acc, val=acc))
        for s, acc in enumerate([0.9, 0.1, 0.8])
    ]
    runs[1].cause = "at chance: test acc 0.100 < 0.150; final train loss 2.410"
    runs.append(Run("sfl_v2", "p", 3, [], returncode=1, cause="crashed (exit 1): Killed"))
    row = tuning.final_stats("sfl_v2", runs[0], runs)
    assert row["ok"] == 2 and len(row["failed"]) == 2
    assert row["test_acc_mean"][0] == pytest.approx(0.6)  # failed seed included
    assert row["test_acc_mean_ok"][0] == pytest.approx(0.85)  # and without it
    md = tuning.results_markdown([row], "t", "python -m x", [])
    assert "| sfl_v2 | p | 2/4 | 60.00 ± 43.59 † (without failed: 85.00 ± 7.07)" in md
    assert "- sfl_v2, seed 1: at chance: test acc 0.100 < 0.150; final train loss 2.410" in md
    assert "- sfl_v2, seed 3: crashed (exit 1): Killed" in md
    assert md.splitlines()[2] == "Command: `python -m x`"


# ---------------------------------------------------------------- the runner, without training


def experiment(**extra) -> dict:
    return {
        "name": "t",
        "title": "T",
        "epochs": 2,
        "tune_seed": 9,
        "seeds": [0, 1],
        "common": ["data=digits"],
        "setting": ["data.num_clients=4"],
        "optional": ["epsl"],
        "grid": {
            "psl": {"lo": ["optim.lr=0.01"], "hi": ["optim.lr=0.1"]},
            "sglr": {"a0": ["algorithm.lr_exponent=0"], "a1": ["algorithm.lr_exponent=1"]},
            "epsl": {"p0": ["algorithm.phi=0"], "p1": ["algorithm.phi=1"]},
        },
        **extra,
    }


def write_summary(out: Path, **kw) -> None:
    out.mkdir(parents=True)
    (out / "summary.json").write_text(json.dumps(summary(**kw)))


@pytest.fixture
def no_training(monkeypatch):
    """The runner may only read: any attempt to train fails the test."""
    monkeypatch.setattr(compare, "registered_algorithms", lambda: ("psl", "sglr"))
    monkeypatch.setattr(compare, "execute", lambda *a: pytest.fail(f"trained {a[1]}"))
    monkeypatch.setattr("lightning_gapsl.plots.plot_tradeoff", lambda *a: [])


def test_finished_runs_are_skipped_and_the_tables_written(tmp_path, no_training, capsys):
    for method, point, seed, val in [
        ("psl", "lo", 9, 0.7),
        ("psl", "hi", 9, 0.8),
        ("sglr", "a0", 9, 0.6),
        ("sglr", "a1", 9, 0.5),
        ("psl", "hi", 0, 0.8),
        ("psl", "hi", 1, 0.8),
        ("sglr", "a0", 0, 0.6),
        ("sglr", "a0", 1, 0.6),
    ]:
        write_summary(
            tmp_path / f"{method}.{point}" / f"seed{seed}",
            val=val,
            test=1 - val,
            client_class_acc=[[1.0, 0.5], [0.0, 1.0]] if method == "psl" else None,
        )
    assert compare.tune(experiment(), tmp_path, "all", 2, 1, "python -m cmd") == 0
    assert "skipping epsl" in capsys.readouterr().err
    assert (tmp_path / "class_acc_psl.png").is_file()  # per-client per-class heat map
    assert not (tmp_path / "class_acc_sglr.png").exists()  # no client_class_acc: no map
    chosen = (tmp_path / "chosen.yaml").read_text()
    assert "psl:\n- algorithm=psl\n- optim.lr=0.1\n" in chosen
    assert "sglr:\n- algorithm=sglr\n- algorithm.lr_exponent=0\n" in chosen
    tuning_md = (tmp_path / "tuning.md").read_text()
    assert "| psl | hi | **yes** | 80.00 | 70.00 | 20.00 |" in tuning_md
    assert "Budget: 2 epochs for every method, tuning and final runs; 2 grid points" in tuning_md
    assert "| **total** | 4 |" in tuning_md
    results = (tmp_path / "results.md").read_text()
    assert results.startswith("### T\n\nCommand: `python -m cmd`")
    assert "| psl | hi | 2/2 | 20.00 ± 0.00 |" in results
    assert "| **total** | 8 |" in results
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 1 + 8


def test_stage_long_runs_the_best_on_validation_longer(tmp_path, no_training):
    for method, point, seed, val in [
        ("psl", "lo", 9, 0.7),
        ("psl", "hi", 9, 0.8),
        ("sglr", "a0", 9, 0.6),
        ("sglr", "a1", 9, 0.5),
        ("psl", "hi", 0, 0.8),
        ("psl", "hi", 1, 0.8),
        ("sglr", "a0", 0, 0.6),
        ("sglr", "a0", 1, 0.6),
        ("psl", "hi", "0_e5", 0.9),
        ("psl", "hi", "1_e5", 0.9),
    ]:
        write_summary(tmp_path / f"{method}.{point}" / f"seed{seed}", val=val, test=val)
    exp = experiment(long_epochs=5, long_top=1)
    assert compare.tune(exp, tmp_path, "long", 1, 1, "python -m cmd stage=long") == 0
    md = (tmp_path / "results_long.md").read_text()
    assert "| psl | hi | 2/2 | 90.00 ± 0.00 |" in md and "| sglr | a0 |" not in md
    assert "Budget: 5 epochs for every method listed" in md
    assert not (tmp_path / "results.md").exists()  # stage=long leaves the final tables alone


def test_stage_long_accepts_a_row_that_runs_another_rows_algorithm(tmp_path, no_training):
    """A row named apart from its method (``algorithm_of``: GAPSL aggregation-free) is
    looked up by the method it runs when the long stage picks the best rows."""
    grid = {
        "psl": {"hi": ["optim.lr=0.1"]},
        "psl_plain": {"lo": ["optim.lr=0.01"]},
    }
    for method, point, seed, val in [
        ("psl", "hi", 9, 0.8),
        ("psl_plain", "lo", 9, 0.7),
        ("psl", "hi", 0, 0.8),
        ("psl", "hi", 1, 0.8),
        ("psl_plain", "lo", 0, 0.7),
        ("psl_plain", "lo", 1, 0.7),
        ("psl_plain", "lo", "0_e5", 0.75),
        ("psl_plain", "lo", "1_e5", 0.75),
    ]:
        write_summary(tmp_path / f"{method}.{point}" / f"seed{seed}", val=val, test=val)
    exp = experiment(
        grid=grid,
        optional=[],
        algorithm_of={"psl_plain": "psl"},
        long_methods=["psl_plain"],
        long_epochs=5,
    )
    assert compare.tune(exp, tmp_path, "long", 1, 1, "python -m cmd stage=long") == 0
    assert "| psl_plain | lo | 2/2 | 75.00 ± 0.00 |" in (tmp_path / "results_long.md").read_text()


def test_top_by_val_needs_validation_numbers():
    rows = [
        {"method": m, "val_acc_mean": (v, None)} for m, v in [("a", 0.5), ("b", 0.9), ("c", 0.7)]
    ]
    assert tuning.top_by_val(rows, 2) == ["b", "c"]
    assert tuning.top_by_val(rows, 2, references=["b"]) == ["c", "a"]  # the yardstick
    with pytest.raises(GridError, match="no validation accuracy for a: name the methods"):
        tuning.top_by_val([{"method": "a", "val_acc_mean": (None, None)}], 1)


def test_top_by_val_gives_one_slot_to_methods_with_identical_numbers():
    # FedAvg and SplitFed V1 compute the same function: equal numbers on every seed.
    same = {"val_acc_mean": (0.8, 0.01), "val_acc_min": (0.7, 0.02)}
    rows = [
        {"method": "gapsl", "val_acc_mean": (0.9, 0.0), "val_acc_min": (0.9, 0.0)},
        {"method": "fedavg", **same},
        {"method": "sfl_v1", **same},
        {"method": "sl", "val_acc_mean": (0.8, 0.03), "val_acc_min": (0.8, 0.0)},
    ]
    assert tuning.top_by_val(rows, 3) == ["gapsl", "fedavg", "sl"]
    rows[2]["val_acc_min"] = (0.7, 0.03)  # same validation mean, another worst: kept
    assert tuning.top_by_val(rows, 3) == ["gapsl", "fedavg", "sfl_v1"]


def test_plan_counts_the_runs_and_runs_nothing(tmp_path, no_training, capsys):
    write_summary(tmp_path / "psl.lo" / "seed9")
    assert compare.tune(experiment(long_epochs=5), tmp_path, "plan", 1, 1, "cmd") == 0
    assert capsys.readouterr().out.strip() == (
        "2 methods x 2 grid points at 2 epochs: 4 tuning runs (1 done); final: 4 more runs "
        "(2 seeds per method); long: 8 runs at 5 epochs"
    )


def test_the_shared_part_alone_is_refused(tmp_path, no_training):
    with pytest.raises(GridError, match="experiment t has no setting"):
        compare.tune(experiment(setting=[]), tmp_path, "tune", 1, 1, "cmd")


def test_stage_final_needs_the_tuning_runs(tmp_path, no_training):
    write_summary(tmp_path / "psl.lo" / "seed9")
    with pytest.raises(GridError, match=r"missing: psl/hi/seed9, sglr/a0/seed9, sglr/a1/seed9"):
        compare.tune(experiment(), tmp_path, "final", 1, 1, "cmd")


def test_a_crashed_run_is_reported_with_its_cause_and_retried(tmp_path, monkeypatch):
    monkeypatch.setattr(compare, "registered_algorithms", lambda: ("psl", "sglr"))
    monkeypatch.setattr("lightning_gapsl.plots.plot_tradeoff", lambda *a: [])
    calls = []

    def fake_execute(cmd, out):
        calls.append(out)
        out.mkdir(parents=True, exist_ok=True)
        if "optim.lr=0.1" in cmd:  # psl/hi diverges
            (out / "train.log").write_text("error: training loss became nan at step 5\n")
            return 1, 2.0, 1.5
        seed = int(out.name[4:])
        (out / "summary.json").write_text(json.dumps(summary(val=0.5 + seed / 100)))
        return 0, 3.0, 2.5

    monkeypatch.setattr(compare, "execute", fake_execute)
    exp = experiment(grid={k: v for k, v in experiment()["grid"].items() if k != "epsl"})
    assert compare.tune(exp, tmp_path, "tune", 1, 1, "cmd") == 1
    md = (tmp_path / "tuning.md").read_text()
    assert "| crashed (exit 1): non-finite loss: error: training loss became nan" in md
    assert "| psl | lo | **yes** |" in md
    assert len(calls) == 4
    compare.tune(exp, tmp_path, "tune", 1, 1, "cmd")  # resume: only the crashed run again
    assert len(calls) == 5 and calls[-1].parent.name == "psl.hi"


# ---------------------------------------------------------------- the experiment files


SETTINGS = [
    "tune_mnist20_dir01",
    "tune_mnist20_dir03",
    "tune_mnist20_iid",
    "tune_mnist20_shards2",
    "tune_mnist100_dir01",
]


@pytest.fixture(scope="module")
def hydra_compose():
    """Hydra's compose inside one initialisation for the whole module (it is the slow part)."""
    from hydra import compose, initialize_config_dir

    from lightning_gapsl.cli import prepare_config_store
    from lightning_gapsl.train import CONF_DIR

    prepare_config_store([])  # the typed defaults conf/config.yaml starts from
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        yield compose


def load_experiment(hydra_compose, name: str) -> dict:
    from omegaconf import OmegaConf

    cfg = hydra_compose(config_name="compare", overrides=[f"experiment={name}"])
    return OmegaConf.to_container(cfg.experiment, resolve=True)


def test_every_setting_tunes_every_registered_method_with_equal_grids(hydra_compose):
    from lightning_gapsl.methods import method_names

    registered = method_names()

    grids = [load_experiment(hydra_compose, name)["grid"] for name in SETTINGS]
    for grid in grids:
        assert tuning.check_grid(grid) == 7
        assert set(registered) <= set(grid) and "epsl" in grid
        assert grid == grids[0]  # one grid, in tune_common.yaml


def test_every_grid_point_is_a_valid_run_config(hydra_compose):
    """Each registered method's points through the real config checks (today's keys).

    One Hydra compose per (method, config-group choices); the point's dotted values are
    then set on the composed config, as Hydra would, so the test stays about a second."""
    import yaml
    from omegaconf import OmegaConf

    from lightning_gapsl.config import build_config
    from lightning_gapsl.methods import method_names

    registered = method_names()

    exp = load_experiment(hydra_compose, "tune_mnist20_dir01")
    base = [
        *exp["common"],
        *exp["setting"],
        f"trainer.max_epochs={exp['epochs']}",
        "output_dir=unused",
    ]
    composed = {}
    for method, points in exp["grid"].items():
        if method not in registered:
            continue
        for overrides in points.values():
            groups = tuple(o for o in overrides if "." not in o.split("=")[0])
            key = (method, groups)
            if key not in composed:
                composed[key] = hydra_compose(
                    config_name="config", overrides=[*base, f"algorithm={method}", *groups]
                )
            raw = composed[key].copy()
            for o in overrides:
                if o not in groups:
                    name, value = o.split("=", 1)
                    OmegaConf.update(raw, name, yaml.safe_load(value), force_add=True)
            cfg = build_config(OmegaConf.to_container(raw, resolve=False))
            assert cfg.algorithm.name == method
            for group, choice in (o.split("=") for o in groups):
                assert getattr(cfg, group).name == choice
