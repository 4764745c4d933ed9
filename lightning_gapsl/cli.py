"""Command-line plumbing shared by the entry points: where the Hydra configuration lives,
and one-line errors for bad overrides before Hydra creates any folder.

The configuration's source of truth is the repository's top-level ``conf/``; a wheel
carries a copy inside the package (``lightning_gapsl/conf``, mapped at build time in
pyproject.toml), so an installed package runs from any folder. Users add their own
config folder with Hydra's search path, e.g.
``lgapsl-train 'hydra.searchpath=[file:///home/me/myconf]' data=mydata``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from lightning_gapsl import registry
from lightning_gapsl.config import _SECTIONS, ConfigError, RunConfig, build_config, load_plugins

DEFAULTS_NODE = "lgapsl_defaults"  # conf/config.yaml's first default: the typed defaults


def config_dir() -> str:
    """The Hydra config folder: the installed package's copy, else the repository's."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no Hydra configuration next to {here} (expected conf/config.yaml)")


def plugins_in(overrides: list[str]) -> list[str]:
    """The modules of a ``plugins=[a.b,c]`` override (Hydra's list syntax), else []."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    found: list[str] = []
    for override in overrides:
        if override.split("=", 1)[0].lstrip("+~") != "plugins":
            continue
        try:
            value = OverridesParser.create().parse_override(override).value()
        except HydraException:
            raise ConfigError(f"cannot parse {override!r}: give plugins=[pkg.module,...]") from None
        found = [str(v) for v in (value if isinstance(value, list) else [value])]
    return found


def _typed_defaults() -> dict:
    """Every section's dataclass defaults: the one source of defaults, below the YAML."""
    return {key: dataclasses.asdict(cls()) for key, cls in _SECTIONS.items() if key != "optim"}


def prepare_config_store(overrides: list[str]) -> None:
    """Import the ``plugins=`` of ``overrides`` and store what Hydra composes from code:
    the typed defaults (so every key can be overridden without a ``+``) and a group option
    for each registered method, data set and model without a YAML file (``data=NAME``
    for a plugin's data set, ``algorithm=NAME`` for its method)."""
    from hydra.core.config_store import ConfigStore

    load_plugins(tuple(plugins_in(overrides)))
    store, folder = ConfigStore.instance(), Path(config_dir())
    store.store(name=DEFAULTS_NODE, node=_typed_defaults())
    for group, names, node in (
        (
            "algorithm",
            registry.METHODS.names(),
            lambda n: dataclasses.asdict(registry.METHODS.get(n).config()),
        ),
        ("data", registry.DATASETS.names(), lambda n: {"name": n}),
        ("model", registry.MODELS.names(), lambda n: {"name": n}),
    ):
        for stale in _STORED.get(group, set()) - set(names):  # unregistered since
            store.repo.get(group, {}).pop(f"{stale}.yaml", None)
        _STORED[group] = set()
        for name in names:
            if not (folder / group / f"{name}.yaml").is_file():
                store.store(group=group, name=name, node=node(name))
                _STORED[group].add(name)


_STORED: dict[str, set[str]] = {}  # group -> the options prepare_config_store added


def compose(overrides: list[str], output_dir: str | None = None) -> RunConfig:
    """The validated config for Hydra-style ``overrides`` without starting a Hydra app.

    Hydra's own errors (an unknown option of a group, a key that does not exist, an
    override that does not parse) become `ConfigError` with one line naming the key
    and what would be valid. ``output_dir`` replaces Hydra's run folder, which only
    exists inside a Hydra app.
    """
    return next(compose_each([overrides], output_dir))


def compose_each(runs: Iterable[list[str]], output_dir: str | None = None) -> Iterator[RunConfig]:
    """`compose` for many override lists under one Hydra initialisation (which is the
    slow part), yielded in order; an invalid one raises its `ConfigError` when reached."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    runs = [list(r) for r in runs]
    for overrides in runs:
        prepare_config_store(overrides)
    extra = [] if output_dir is None else [f"output_dir={output_dir}"]
    GlobalHydra.instance().clear()  # a Hydra app that ran before in this process leaves it set
    with initialize_config_dir(config_dir=config_dir(), version_base=None):
        for overrides in runs:
            try:
                raw = hydra_compose(config_name="config", overrides=[*overrides, *extra])
                container = OmegaConf.to_container(raw, resolve=True)
            except HydraException as err:
                raise ConfigError(hydra_error_line(err, overrides)) from None
            yield build_config(container)


def _unparsable(overrides: list[str]) -> str | None:
    """The first override Hydra's grammar rejects."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_override(override)
        except HydraException:
            return override
    return None


def check_command_line(argv: list[str]) -> None:
    """Raise `ConfigError` for bad overrides; nothing is written anywhere.

    Skipped when Hydra flags are present (``--multirun``, ``--help``, ``--cfg``...):
    Hydra handles those itself.
    """
    if any(arg.startswith("-") for arg in argv):
        return
    has_output = any(arg.split("=", 1)[0].lstrip("+~") == "output_dir" for arg in argv)
    compose(argv, None if has_output else "outputs/check")


_OVERRIDE = re.compile(r"Could not (?:override|append to|delete from) '([^']+)'")
_MISSING = re.compile(r"Could not find '([^']+)'")


def _algorithm_config(overrides) -> type:
    """The config class of the method these overrides choose (else the default one)."""
    from omegaconf import OmegaConf

    from lightning_gapsl.config import _method_config_class

    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("algorithm=")]
    if not chosen:
        defaults = OmegaConf.to_container(OmegaConf.load(Path(config_dir()) / "config.yaml"))
        defaults = defaults.get("defaults", [])
        chosen = [d["algorithm"] for d in defaults if isinstance(d, dict) and "algorithm" in d]
    return _method_config_class(chosen[-1])


def hydra_error_line(err: Exception, overrides: list[str] = ()) -> str:
    """One line for a Hydra composition error, naming the key and what would be valid."""
    from hydra.errors import MissingConfigException, OverrideParseException

    text = str(err)
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        missing = _MISSING.search(text)
        group, _, name = (missing.group(1) if missing else err.missing_cfg_file).rpartition("/")
        options = ", ".join(sorted(err.options or [])) or "none found"
        return f"{group or 'config'}={name!r} is not valid; choose one of: {options}"
    match = _OVERRIDE.search(text)
    if match:
        key = match.group(1)
        section, _, name = key.partition(".")
        if section in (*_SECTIONS, "algorithm") and name:
            cls = _algorithm_config(overrides) if section == "algorithm" else _SECTIONS[section]
            fields = [f.name for f in dataclasses.fields(cls)]
            valid = ", ".join(fields)
            if name in fields:  # a real key that the chosen group file does not set
                return (
                    f"{key} is not set by the chosen {section} config; add it with "
                    f"+{key}=... (valid keys under {section}: {valid})"
                )
            return f"unknown key {key}; valid keys under {section}: {valid}"
        valid = ", ".join([*_SECTIONS, "seed", "ckpt_path", "output_dir"])
        return f"unknown key {key}; valid top-level keys: {valid}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    if isinstance(err, OverrideParseException):
        bad = _unparsable(list(overrides))
        where = f"override {bad!r}" if bad else "the command line"
        return f"cannot parse {where} (KEY=VALUE, lists as [a,b]): {first}"
    return first
