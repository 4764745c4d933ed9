"""Typed run configuration, built and validated once at the entry point.

Hydra composes `conf/`; `build_config` turns that into frozen dataclasses and checks
every value and every cross-field rule here, so a bad value stops the run before any
process starts, with a message naming the key and what would be valid. The rest of
the package only ever sees these dataclasses, never a raw ``DictConfig``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightning_gapsl import registry
from lightning_gapsl.checks import ConfigError, check, choice
from lightning_gapsl.device_trace import load_trace
from lightning_gapsl.privacy.config import DefenseConfig, PrivacyConfig, validate_privacy

LABEL_KINDS = ("fine", "coarse")
AUGMENTED_BY_DEFAULT = ("cifar10", "cifar100")  # data.augment=null turns it on for these
MODULE_MODEL = "module"  # model=module: any nn.Module, ``model.target`` cut at ``model.cut``
CLIENT_EXECS = ("auto", "loop", "vmap", "grouped")
PRECISIONS = ("32-true", "bf16-mixed")
OPTIMIZERS = ("sgd", "adam")
METHOD_OPTIM = "method"  # optim=method: the method's own optimizer (conf/algorithm/*.yaml)
LOGGERS = ("wandb", "csv", "none")
ACCELERATORS = ("cpu", "gpu", "auto")
START_METHODS = ("fork", "spawn", "popen")
CLIENT_INITS = ("shared", "independent")


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"
    """Dataset: mnist | fmnist | digits | synthetic | cifar10 | cifar100 | leaf | tensors,
    or one a plugin registers (`lightning_gapsl.registry.register_dataset`)."""
    path: str | None = None
    """data=tensors: the torch.save'd dict of train_x, train_y, test_x, test_y (optional
    train_groups), any sample shape (n, *F)."""
    root: str | None = None
    """Folder with the data files (cifar10, cifar100: the python-pickle folder or the one
    above it; leaf: the folder holding train/ and test/; fmnist: default
    /usr/share/datasets/fashion-mnist, where the Debian package puts them)."""
    num_clients: int = 10
    """Number of clients N (global client ids 0..N-1)."""
    partition: str = "dirichlet"
    """How training samples are split over clients: iid | dirichlet | shards | natural
    (clients of whole groups, e.g. LEAF users: data sets with a per-sample group id), or a
    registered partitioner (`lightning_gapsl.registry.register_partitioner`)."""
    alpha: float = 0.3
    """Dirichlet concentration; smaller is more heterogeneous."""
    shards_per_client: int = 2
    """Shards (label-sorted chunks) per client for partition=shards."""
    batch_size: int = 32
    """Per-client batch size per step (centralized: the batch size)."""
    eval_batch_size: int = 1000
    """Test-set batch size for evaluation."""
    max_train: int | None = None
    """Keep only this many training samples (quick runs)."""
    max_test: int | None = None
    """Keep only this many test samples (quick runs)."""
    val_fraction: float = 0.1
    """Share of the (truncated) training samples held out as the validation split, in
    [0, 0.5): stratified by class, drawn from the run seed, carved before partitioning
    (the same for every layout), never trained on; 0 = no validation split."""
    steps_per_epoch: int | None = None
    """Steps per epoch; default ceil(train samples / (N * batch_size))."""
    augment: bool | None = None
    """Training augmentation: random crop with 4-pixel padding and horizontal flip, seeded
    per (seed, client, step), run on the batch's device; null: on for cifar10/cifar100,
    off for every other data set."""
    label_kind: str = "fine"
    """cifar100 labels: fine (100 classes) | coarse (20 superclasses)."""
    quantity_sigma: float = 0.0
    """Quantity skew: sigma of log-normal client sizes (FedLab's unbalance_sgm) for
    partition=iid or dirichlet (then each client's label mix ~ Dir(alpha)); 0 = off."""
    min_client_size: int = 1
    """Fewest training samples a client may get; a Dirichlet draw that cannot meet it after
    10 seeded re-draws stops the run with an error."""
    partition_file: str | None = None
    """Replay this partition.json (written by every run) instead of drawing a partition."""
    shape: tuple[int, int, int] = (1, 28, 28)
    """Sample shape (synthetic; leaf: the shape of one flattened sample, FEMNIST's default)."""
    num_classes: int = 10
    """Number of classes (synthetic only)."""
    num_train: int = 6000
    """Training samples (synthetic only)."""
    num_test: int = 1000
    """Test samples (synthetic only)."""

    @property
    def augmented(self) -> bool:
        """Whether training batches are augmented (``augment``, or its data-set default)."""
        return self.name in AUGMENTED_BY_DEFAULT if self.augment is None else self.augment


@dataclass(frozen=True)
class ModelConfig:
    name: str = "lenet"
    """Model: lenet | resnet18 | module (``target``), or one a plugin registers
    (`lightning_gapsl.registry.register_model`)."""
    cut_layer: int = 1
    """Number of blocks (children) held by each client (1 .. blocks-1); ``cut`` sets it
    by a child's name instead."""
    target: str | None = None
    """model=module: ``pkg.module.fn``, called as ``fn(input_shape, num_classes)``, returning
    an nn.Module whose children run in order (an nn.Sequential, possibly with names)."""
    cut: str | None = None
    """The last child on the client (its name, or its index): the client segment is every
    child up to and including it; null: ``cut_layer`` children."""
    client_init: str = "shared"
    """shared: one model initialised from the run seed, every client segment (and every
    auxiliary model or decoder) starts as a copy, as deployed split learning and the
    reference codes do; independent: a seed per client (to study what a common
    starting point does)."""
    client_exec: str = "auto"
    """How a rank runs its K virtual clients: loop (one client after another, bitwise equal
    to separate models) | vmap | grouped (one grouped kernel per layer for all K) | auto
    (loop on CPU, measured fastest there; grouped on CUDA, not yet measured)."""


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    """sgd | adam; one optimizer per party with these settings. The config group
    ``optim=method`` (default) takes each method's own choice (conf/algorithm/*.yaml,
    key ``optim``); a method without one gets these defaults."""
    lr: float = 0.05
    """Learning rate of clients and server."""
    momentum: float = 0.9
    """SGD momentum (ignored by adam only when 0)."""
    weight_decay: float = 0.0
    """L2 weight decay."""


@dataclass(frozen=True)
class TrainerConfig:
    devices: int = 3
    """Processes, server included (1 = in-process)."""
    accelerator: str = "cpu"
    """cpu (gloo) | gpu (NCCL) | auto."""
    max_epochs: int = 3
    """Training epochs."""
    start_method: str = "fork"
    """How ranks start without a cluster launcher: fork | spawn | popen."""
    timeout_s: float = 120.0
    """Seconds a collective may wait before the run stops."""
    progress_bar: bool = True
    """Show the progress bar on the server rank."""
    threads: int | None = None
    """torch intra-op threads per process (null: $OMP_NUM_THREADS if set, else 1; never
    derived from the process count). Equal thread counts make 1-process and N-process
    runs agree to the last bit; unequal ones only to float reduction-order noise, which
    GAPSL's discrete leader choice can amplify."""
    ckpt_every: int = 1
    """Write <output_dir>/checkpoints/last.ckpt every this many epochs (0: only on SIGUSR1)."""
    eval_every: int = 1
    """Evaluate every this many epochs, and always after the last one; 0 = never
    (benchmarks)."""
    precision: str = "32-true"
    """Lightning precision: 32-true | bf16-mixed (autocast forwards; weights, optimizer
    state and the cut-layer traffic stay float32 where the layers return float32)."""
    deterministic: bool = False
    """Reproducible GPU runs: TF32 off for matmuls and convolutions, deterministic
    algorithms only (an op without one stops the run naming it), CUBLAS_WORKSPACE_CONFIG
    set; slower. CPU runs are deterministic either way."""


@dataclass(frozen=True)
class LoggerConfig:
    name: str = "csv"
    """wandb | csv | none."""
    project: str = "lightning_gapsl"
    """W&B project (and CSV logger name)."""
    entity: str | None = None
    """W&B entity (team or user)."""
    mode: str | None = None
    """W&B mode: online | offline | disabled (null: WANDB_MODE or online)."""


WANDB_MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class LatencyConfig:
    client_flops: float = 1e10
    """FLOP/s of the median client."""
    client_hetero: float = 0.5
    """Sigma of the log-normal spread of client speeds."""
    server_flops: float = 1e12
    """FLOP/s of the server."""
    uplink_bps: float = 1e7
    """Client -> server bandwidth, bits/s."""
    downlink_bps: float = 5e7
    """Server -> client bandwidth, bits/s."""
    trace: str | None = None
    """A device and availability trace (JSON, `lightning_gapsl.device_trace`): for every
    client id 0..N-1 its FLOP/s and uplink / downlink bits/s (replacing client_flops,
    client_hetero, uplink_bps and downlink_bps), and optional availability windows
    [start, end) of global training steps (steps, not the simulated clock, so the draws
    are the same in every layout); a client outside them takes no part in that round or
    step, like a dropout (summary.json: dropped_unavailable per epoch). Format:
    `{"clients": [{"id": 0, "flops": 2e10, "uplink_bps": 1e7, "downlink_bps": 5e7,
    "available": [[0, 100], [250, 400]]}, ...]}`, ``available`` optional (absent: always
    online). null: the log-normal model above, every client always online."""


@dataclass(frozen=True)
class ParticipationConfig:
    fraction: float = 1.0
    """Share of the N clients taking part in each round (averaging methods) or step (PSL
    family), in (0, 1]: floor(fraction * N), at least one, drawn from (seed, round or
    step), the same in every layout; 1.0 = everyone, exactly as without this section."""
    clients: int | None = None
    """Clients per round or step, in [1, N]; replaces fraction when set."""
    dropout: float = 0.0
    """Probability in [0, 1) that a participant fails to deliver (seeded per client and
    round or step); the server proceeds with the rest."""
    deadline_s: float | None = None
    """Drop participants whose simulated compute time for the round or step (the latency
    model's FLOPs / client speed) exceeds this many seconds; null: no deadline."""

    @property
    def partial(self) -> bool:
        """Whether anything but every client in every round or step can take part."""
        return (
            self.clients is not None
            or self.fraction < 1
            or self.dropout > 0
            or self.deadline_s is not None
        )


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig | None = None
    """The optimizer; None: the method's own (`Method.optim`, its tuned choice), else the
    `OptimConfig` defaults."""
    algorithm: Any = field(default_factory=lambda: _method_config("gapsl"))
    """The method's own config dataclass (`lightning_gapsl.methods.<name>`)."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    participation: ParticipationConfig = field(default_factory=ParticipationConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    """The leakage evaluation after training (`lightning_gapsl.privacy`)."""
    defense: DefenseConfig = field(default_factory=DefenseConfig)
    """Defenses of the smashed data (activation noise, NoPeek)."""
    seed: int = 0
    """Run seed; per-client randomness is derived from (seed, client id)."""
    ckpt_path: str | None = None
    """Checkpoint to resume from."""
    output_dir: str = "outputs/run"
    """Folder for summary.json, logs and checkpoints."""
    plugins: tuple[str, ...] = ()
    """Modules imported in every rank before the configuration is validated: they register
    methods, data sets, models, partitioners and metrics (`lightning_gapsl.registry`)."""

    def __post_init__(self) -> None:
        if self.optim is None:  # frozen: the method's default set through object.__setattr__
            object.__setattr__(self, "optim", method_optim(self.algorithm.name))

    @property
    def num_client_ranks(self) -> int:
        """Processes that host clients: all but the server rank, or the one process."""
        return max(self.trainer.devices - 1, 1)


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "latency": LatencyConfig,
    "participation": ParticipationConfig,
    "privacy": PrivacyConfig,
    "defense": DefenseConfig,
}
MAX_SEED = 2**32 - 1  # numpy's seed range, which seed_everything enforces
_TOP_LEVEL = {"seed", "ckpt_path", "output_dir", "hydra", "algorithm", "plugins"}


def _section(key: str, cls: type, raw: Mapping[str, Any] | None) -> Any:
    """Build one section dataclass, rejecting unknown keys and coercing basic types."""
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]}; valid keys under {key}: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(f"{key}.{name}", fields[name].type, value)
    return cls(**values)


def _coerce(key: str, type_name: Any, value: Any) -> Any:
    """Coerce a YAML/CLI value to the annotated field type, or raise naming the key."""
    type_name = str(type_name)
    if value is None:
        if "None" in type_name:
            return None
        raise ConfigError(f"{key} must not be null")
    try:
        if type_name.startswith("tuple[str"):
            if isinstance(value, str):
                raise TypeError
            return tuple(str(v) for v in value)
        if type_name.startswith("tuple"):
            return tuple(int(v) for v in value)
        if type_name.startswith("bool"):
            if isinstance(value, bool):
                return value
            raise TypeError
        if type_name.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError
            return int(value)
        if type_name.startswith("float"):
            number = float(value)
            if math.isfinite(number):  # NaN passes every `x > 0` style check: refuse it here
                return number
            raise TypeError
        if type_name.startswith("str"):
            return str(value)
    except (TypeError, ValueError):
        kind = "finite number" if type_name.startswith("float") else type_name
        kind = kind.replace(" | None", " or null")
        raise ConfigError(f"{key}={value!r} is not a valid {kind}") from None
    return value


def load_plugins(plugins: tuple[str, ...]) -> None:
    """Import the ``plugins`` modules (each registers what it brings); ConfigError if not."""
    try:
        registry.import_plugins(plugins)
    except registry.RegistryError as err:
        raise ConfigError(str(err)) from None


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value and every cross-field rule; return ``cfg`` unchanged."""
    load_plugins(cfg.plugins)
    d, m, o, a, t = cfg.data, cfg.model, cfg.optim, cfg.algorithm, cfg.trainer
    choice("data", d.name, registry.DATASETS.names())
    choice("data.partition", d.partition, registry.PARTITIONERS.names())
    choice("model", m.name, (*registry.MODELS.names(), MODULE_MODEL))
    _validate_model_source(m)
    check(
        d.name == "tensors" or d.path is None,
        f"data.path is for data=tensors; data={d.name} does not read it (set data.path=null)",
    )
    choice("optim", o.name, OPTIMIZERS)
    choice("logger", cfg.logger.name, LOGGERS)
    choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    choice("trainer.start_method", t.start_method, START_METHODS)
    choice("model.client_init", m.client_init, CLIENT_INITS)
    choice("model.client_exec", m.client_exec, CLIENT_EXECS)
    choice("trainer.precision", t.precision, PRECISIONS)
    check(d.num_clients >= 1, f"data.num_clients={d.num_clients} must be >= 1")
    check(d.alpha > 0 and math.isfinite(d.alpha), f"data.alpha={d.alpha} must be > 0")
    check(d.shards_per_client >= 1, f"data.shards_per_client={d.shards_per_client} must be >= 1")
    check(d.batch_size >= 1, f"data.batch_size={d.batch_size} must be >= 1")
    check(d.eval_batch_size >= 1, f"data.eval_batch_size={d.eval_batch_size} must be >= 1")
    for key in ("max_train", "max_test", "steps_per_epoch"):
        value = getattr(d, key)
        check(value is None or value >= 1, f"data.{key}={value} must be >= 1 or null")
    check(
        len(d.shape) >= 1 and min(d.shape) >= 1,
        f"data.shape={list(d.shape)} must be positive sizes ([C, H, W] for images)",
    )
    check(0 <= d.val_fraction < 0.5, f"data.val_fraction={d.val_fraction} must be in [0, 0.5)")
    choice("data.label_kind", d.label_kind, LABEL_KINDS)
    check(
        d.label_kind == "fine" or d.name == "cifar100",
        f"data.label_kind={d.label_kind} is for data=cifar100 only; data={d.name} has fine labels",
    )
    check(d.quantity_sigma >= 0, f"data.quantity_sigma={d.quantity_sigma} must be >= 0 (0: off)")
    check(
        d.quantity_sigma == 0 or d.partition in ("iid", "dirichlet"),
        f"data.quantity_sigma={d.quantity_sigma} applies to data.partition=iid or dirichlet, "
        f"not {d.partition}; set data.quantity_sigma=0",
    )
    check(d.min_client_size >= 1, f"data.min_client_size={d.min_client_size} must be >= 1")
    if d.partition_file is not None:
        check(
            os.path.isfile(d.partition_file),
            f"data.partition_file={d.partition_file!r}: no such file (give a partition.json "
            "that a run wrote)",
        )
    check(o.lr > 0, f"optim.lr={o.lr} must be > 0")
    check(0 <= o.momentum < 1, f"optim.momentum={o.momentum} must be in [0, 1)")
    check(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
    check(m.cut_layer >= 1, f"model.cut_layer={m.cut_layer} must be >= 1")
    check(t.devices >= 1, f"trainer.devices={t.devices} must be >= 1 (processes, server included)")
    check(t.max_epochs >= 1, f"trainer.max_epochs={t.max_epochs} must be >= 1")
    check(t.timeout_s > 0, f"trainer.timeout_s={t.timeout_s} must be > 0")
    check(t.ckpt_every >= 0, f"trainer.ckpt_every={t.ckpt_every} must be >= 0 (0: off)")
    check(t.eval_every >= 0, f"trainer.eval_every={t.eval_every} must be >= 0 (0: never)")
    check(t.threads is None or t.threads >= 1, f"trainer.threads={t.threads} must be >= 1 or null")
    check(
        t.devices - 1 <= d.num_clients,
        f"trainer.devices={t.devices} gives {t.devices - 1} client ranks but "
        f"data.num_clients={d.num_clients}; use trainer.devices <= {d.num_clients + 1}",
    )
    check(
        cfg.logger.mode is None or cfg.logger.mode in WANDB_MODES,
        f"logger.mode={cfg.logger.mode!r} is not valid; choose one of: "
        f"{', '.join(WANDB_MODES)} or null",
    )
    check(bool(cfg.logger.project), "logger.project must not be empty")
    check(0 <= cfg.seed <= MAX_SEED, f"seed={cfg.seed} must be in [0, {MAX_SEED}]")
    for f in dataclasses.fields(LatencyConfig):
        value = getattr(cfg.latency, f.name)
        if f.name == "trace":  # a file, checked with the client count below
            continue
        if f.name == "client_hetero":  # a spread: 0 means every client equally fast
            check(value >= 0, f"latency.client_hetero={value} must be >= 0 (0: all equal)")
        else:  # a rate: zero or negative would give infinite or negative simulated time
            check(value > 0, f"latency.{f.name}={value} must be > 0")
    if cfg.latency.trace is not None:
        load_trace(cfg.latency.trace, d.num_clients)  # raises naming latency.trace
    _validate_participation(cfg)
    a.validate(cfg)  # the method's own keys and cross-field rules
    validate_privacy(cfg)
    if cfg.ckpt_path is not None:
        check(os.path.isfile(cfg.ckpt_path), f"ckpt_path={cfg.ckpt_path!r}: no such file")
    return cfg


def _validate_participation(cfg: RunConfig) -> None:
    p, n = cfg.participation, cfg.data.num_clients
    check(0 < p.fraction <= 1, f"participation.fraction={p.fraction} must be in (0, 1]")
    check(
        p.clients is None or 1 <= p.clients <= n,
        f"participation.clients={p.clients} must be in [1, data.num_clients={n}] or null",
    )
    check(0 <= p.dropout < 1, f"participation.dropout={p.dropout} must be in [0, 1)")
    check(
        p.deadline_s is None or p.deadline_s > 0,
        f"participation.deadline_s={p.deadline_s} must be > 0 or null",
    )
    if partial_participation(cfg):
        check(
            registry.METHODS.get(cfg.algorithm.name).participation is not None,
            f"algorithm={cfg.algorithm.name} does not support partial participation yet; "
            "keep participation.fraction=1.0, clients=null, dropout=0, deadline_s=null "
            "and no availability windows in latency.trace",
        )


def partial_participation(cfg: RunConfig) -> bool:
    """Whether fewer than every client can take part in some round or step: the
    ``participation`` keys, or availability windows in ``latency.trace`` (read here)."""
    if cfg.participation.partial:
        return True
    trace = cfg.latency.trace
    return trace is not None and load_trace(trace, cfg.data.num_clients).has_windows


def _validate_model_source(m: ModelConfig) -> None:
    if m.name == MODULE_MODEL:
        check(
            m.target is not None and "." in m.target,
            f"model=module needs model.target=pkg.module.fn (a function (input_shape, "
            f"num_classes) -> nn.Module), got {m.target!r}",
        )
    else:
        check(
            m.target is None,
            f"model.target is for model=module; model={m.name} is built "
            "in or registered (set model.target=null)",
        )


def _method_config_class(name: Any) -> type:
    """The config dataclass of method ``name`` (the registry is the one list of names)."""
    if str(name) not in registry.METHODS:
        raise ConfigError(
            f"algorithm={name!r} is not valid; choose one of: {', '.join(registry.METHODS.names())}"
        )
    return registry.METHODS.get(str(name)).config


def _method_config(name: str) -> Any:
    return _method_config_class(name)()


def method_optim(name: str) -> OptimConfig:
    """The optimizer method ``name`` runs with unless told otherwise (`Method.optim`, its
    tuned choice); the `OptimConfig` defaults for a method without one."""
    return getattr(registry.METHODS.get(name), "optim", None) or OptimConfig()


def _resolve_optim(optim: dict, method: str) -> dict:
    """``optim=method`` (the default): the method's own optimizer (`method_optim`), with
    every ``optim.*`` key set on the command line winning; ``optim=sgd|adam``: exactly
    that file and its overrides."""
    if optim.get("name", METHOD_OPTIM) != METHOD_OPTIM:
        return optim
    given = {k: v for k, v in optim.items() if k != "name" and v is not None}
    return {**dataclasses.asdict(method_optim(method)), **given}


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Turn the composed (resolved) Hydra config into a validated ``RunConfig``."""
    unknown = sorted(set(raw) - set(_SECTIONS) - _TOP_LEVEL)
    if unknown:
        valid = ", ".join(sorted(set(_SECTIONS) | _TOP_LEVEL - {"hydra"}))
        raise ConfigError(f"unknown key {unknown[0]}; valid top-level keys: {valid}")
    plugins = _coerce("plugins", "tuple[str, ...]", raw.get("plugins") or ())
    load_plugins(plugins)  # first: a plugin may bring the method, data set or model named
    algorithm = dict(raw.get("algorithm") or {})
    method_class = _method_config_class(algorithm.get("name"))
    sections = {
        key: _section(key, cls, raw.get(key)) for key, cls in _SECTIONS.items() if key != "optim"
    }
    sections["optim"] = _section(
        "optim", OptimConfig, _resolve_optim(dict(raw.get("optim") or {}), str(algorithm["name"]))
    )
    sections["algorithm"] = _section("algorithm", method_class, algorithm)
    top = {
        "plugins": plugins,
        "seed": _coerce("seed", "int", raw.get("seed", 0)),
        "ckpt_path": _coerce("ckpt_path", "str | None", raw.get("ckpt_path")),
        "output_dir": _coerce("output_dir", "str", raw.get("output_dir", "outputs/run")),
    }
    return validate(RunConfig(**sections, **top))
