"""Unit tests (milliseconds): config composition and validation through the real
Hydra files; every bad value stops with a message naming its key and valid values."""

from __future__ import annotations

import pytest

from lightning_gapsl.config import ConfigError, RunConfig, TrainerConfig
from lightning_gapsl.data.datasets import DataError
from lightning_gapsl.models import ModelError
from lightning_gapsl.train import compose, preflight


def _cfg(tmp_path, *overrides) -> RunConfig:
    return compose(["data=digits", *overrides], str(tmp_path / "out"))


def test_defaults_are_the_readme_job(tmp_path):
    cfg = compose([], str(tmp_path))
    assert cfg.algorithm.name == "gapsl" and cfg.data.name == "mnist"
    assert cfg.data.num_clients == 10 and cfg.data.partition == "dirichlet"
    assert cfg.data.alpha == 0.3 and cfg.trainer.devices == 3
    assert cfg.data.val_fraction == 0.1 and cfg.model.client_init == "shared"


@pytest.mark.parametrize(
    "override, key, valid",
    [
        ("algorithm.reading=sideways", "algorithm.reading", "cut, client"),
        ("algorithm.align_mode=spin", "algorithm.align_mode", "pcgrad"),
        ("data.partition=random", "data.partition", "iid, dirichlet, shards"),
        ("data.alpha=0", "data.alpha", "> 0"),
        ("data.alpha=-1", "data.alpha", "> 0"),
        ("data.num_clients=0", "data.num_clients", ">= 1"),
        ("trainer.devices=0", "trainer.devices", ">= 1"),
        ("trainer.devices=8", "trainer.devices", "<= 7"),  # digits default: 6 clients
        ("algorithm.lam=2", "algorithm.lam", "[0, 1]"),
        ("optim.lr=0", "optim.lr", "> 0"),
        ("trainer.accelerator=tpu", "trainer.accelerator", "cpu, gpu, auto"),
        ("data.batch_size=abc", "data.batch_size", "int"),
        ("+data.colour=red", "data.colour", "valid keys under data"),
        ("+mystery=1", "mystery", "valid top-level keys"),
        ("data.val_fraction=0.5", "data.val_fraction", "[0, 0.5)"),
        ("data.val_fraction=-0.1", "data.val_fraction", "[0, 0.5)"),
        ("model.client_init=copy", "model.client_init", "shared, independent"),
        ("ckpt_path=/nonexistent/x.ckpt", "ckpt_path", "no such file"),
    ],
)
def test_bad_value_names_key(tmp_path, override, key, valid):
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, override)
    assert key in str(err.value) and valid in str(err.value)


def test_centralized_is_one_process(tmp_path):
    with pytest.raises(ConfigError, match="trainer.devices=1"):
        _cfg(tmp_path, "algorithm=centralized", "trainer.devices=3")


def test_unknown_group_option_lists_choices(tmp_path):
    with pytest.raises(ConfigError) as err:
        _cfg(tmp_path, "algorithm=nope")
    line = str(err.value)
    assert line.startswith("algorithm='nope' is not valid; choose one of:") and "\n" not in line
    assert "gapsl" in line and "psl" in line


def test_preflight_cut_layer_out_of_range(tmp_path):
    with pytest.raises(ModelError, match=r"model.cut_layer=4.*1\.\.3"):
        preflight(_cfg(tmp_path, "model.cut_layer=4", "trainer.devices=1"))


def test_preflight_missing_cifar_folder(tmp_path):
    missing = tmp_path / "no-cifar-here"
    with pytest.raises(DataError, match=str(missing)):
        preflight(_cfg(tmp_path, "data=cifar10", f"data.root={missing}", "trainer.devices=1"))


def test_preflight_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = compose(["data=digits"], str(blocker / "sub"))
    with pytest.raises(ConfigError, match="output_dir"):
        preflight(cfg)


def _raw_optim(method: str, **optim):
    from lightning_gapsl.config import build_config

    base = {"name": "method", "lr": None, "momentum": None, "weight_decay": None}
    return build_config({"algorithm": {"name": method}, "optim": {**base, **optim}}).optim


def test_optim_method_takes_the_methods_own_optimizer_and_lets_keys_win():
    """optim=method (default): the method's own optimizer (`Method.optim`); any optim.* key
    given wins; optim=sgd|adam ignores the method's entirely."""
    assert (_raw_optim("psl").name, _raw_optim("psl").lr) == ("adam", 0.003)
    assert (_raw_optim("psl", lr=0.01).name, _raw_optim("psl", lr=0.01).lr) == ("adam", 0.01)
    explicit = _raw_optim("psl", name="sgd", lr=0.1, momentum=0.5, weight_decay=0.0)
    assert (explicit.name, explicit.lr, explicit.momentum) == ("sgd", 0.1, 0.5)


def test_a_method_optimizer_is_not_an_algorithm_key():
    """The method's optimizer lives in its Method record, not in the algorithm section."""
    from lightning_gapsl.config import build_config

    with pytest.raises(
        ConfigError,
        match="unknown key algorithm.optim; valid keys under algorithm: client_grad, name",
    ):
        build_config({"algorithm": {"name": "psl", "optim": {"name": "adam"}}})


def test_every_method_names_its_optimizer_and_python_configs_agree_with_the_cli(tmp_path):
    """Each method carries the optimizer it runs with by default; the command line wins;
    a RunConfig built in Python gets the same optimizer as the same run composed from the
    command line (one source of defaults)."""
    from lightning_gapsl.methods import get_method, method_names

    for name in method_names():
        tuned = get_method(name).optim
        assert tuned is not None, f"{name} has no Method.optim"
        composed = _cfg(tmp_path, f"algorithm={name}", "trainer.devices=1")
        assert composed.optim == tuned, name
        in_python = RunConfig(
            algorithm=get_method(name).config(),
            output_dir=str(tmp_path),
            trainer=TrainerConfig(devices=1),
        )
        assert in_python == compose([f"algorithm={name}", "trainer.devices=1"], str(tmp_path)), name
        lr = _cfg(tmp_path, f"algorithm={name}", "trainer.devices=1", "optim.lr=0.123").optim.lr
        assert lr == 0.123, name


def test_method_yaml_and_config_class_agree(tmp_path):
    """The yaml is what runs; the dataclass defaults must not tell another story."""
    from lightning_gapsl.methods import get_method, method_names

    for name in method_names():
        composed = _cfg(tmp_path, f"algorithm={name}", "trainer.devices=1").algorithm
        assert composed == get_method(name).config(), name
