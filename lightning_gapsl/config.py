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

ALGORITHMS = ("centralized", "psl", "gapsl", "sglr", "sfl_v1", "sfl_v2", "fedavg", "locfedmix",
              "cse_fsl", "fsl_sage", "sl")
DATASETS = ("mnist", "digits", "synthetic", "cifar10")
PARTITIONS = ("iid", "dirichlet", "shards")
MODELS = ("lenet", "resnet18")
CLIENT_EXECS = ("auto", "loop", "vmap", "grouped")
PRECISIONS = ("32-true", "bf16-mixed")
OPTIMIZERS = ("sgd", "adam")
LOGGERS = ("wandb", "csv", "none")
ACCELERATORS = ("cpu", "gpu", "auto")
START_METHODS = ("fork", "spawn", "popen")
READINGS = ("cut", "client")
ALIGN_MODES = ("norm", "norm_exact", "linear", "pcgrad")
CLIENT_GRADS = ("own", "weighted")
# Algorithms that run the PSL step protocol (server gathers, transforms, scatters).
SPLIT_ALGORITHMS = ("psl", "gapsl", "sglr", "sfl_v1", "sfl_v2", "fedavg", "locfedmix", "cse_fsl",
                    "fsl_sage", "sl")
# Algorithms that average client segments (FedAvg) at the end of every round.
FEDAVG_ALGORITHMS = ("sfl_v1", "sfl_v2", "fedavg", "locfedmix", "cse_fsl", "fsl_sage")
# Algorithms whose clients learn from a local auxiliary model (aux_step.py).
AUX_ALGORITHMS = ("cse_fsl", "fsl_sage")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the valid choices."""


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"
    """Dataset: mnist | digits | synthetic | cifar10."""
    root: str | None = None
    """Folder with the data files (cifar10 only)."""
    num_clients: int = 10
    """Number of clients N (global client ids 0..N-1)."""
    partition: str = "dirichlet"
    """How training samples are split over clients: iid | dirichlet | shards."""
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
    steps_per_epoch: int | None = None
    """Steps per epoch; default ceil(train samples / (N * batch_size))."""
    shape: tuple[int, int, int] = (1, 28, 28)
    """Sample shape (synthetic only)."""
    num_classes: int = 10
    """Number of classes (synthetic only)."""
    num_train: int = 6000
    """Training samples (synthetic only)."""
    num_test: int = 1000
    """Test samples (synthetic only)."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "lenet"
    """Model: lenet | resnet18."""
    cut_layer: int = 1
    """Number of blocks held by each client (1 .. blocks-1)."""
    client_exec: str = "auto"
    """How a rank runs its K virtual clients: loop (one client after another, bitwise equal
    to separate models) | vmap | grouped (one grouped kernel per layer for all K) | auto
    (loop on CPU, measured fastest there; grouped on CUDA, not yet measured)."""


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    """sgd | adam; one optimizer per party with these settings."""
    lr: float = 0.05
    """Learning rate of clients and server."""
    momentum: float = 0.9
    """SGD momentum (ignored by adam only when 0)."""
    weight_decay: float = 0.0
    """L2 weight decay."""


@dataclass(frozen=True)
class AlgorithmConfig:
    name: str = "gapsl"
    """centralized | psl | gapsl."""
    client_grad: str = "own"
    """own: client i receives d(own mean loss)/dz_i; weighted: d(server loss)/dz_i."""
    reading: str = "client"
    """GAPSL gradient reading: cut (server side) | client (segment parameter gradients)."""
    rho: float = 0.5
    """GAPSL leader fraction: ceil(rho * N) leaders."""
    tau: float | None = None
    """GAPSL consistency threshold; replaces rho when set."""
    normalize_leader: bool = False
    """GAPSL: average unit-normalised leader gradients."""
    beta: float = 0.9
    """GAPSL EMA factor of the leader gradient."""
    lam: float = 1.0
    """GAPSL alignment coefficient lambda (0 = psl; 1.0 measured best, see README)."""
    align_mode: str = "norm"
    """GAPSL alignment form: norm | norm_exact | linear | pcgrad."""
    lr_exponent: float = 0.5
    """SGLR SplitLr: server learning rate = client rate * N ** lr_exponent, in [0, 2]."""
    avg_fraction: float = 0.5
    """SGLR SplitAvg: fraction of clients that receive slot-wise averaged cut gradients."""
    avg_phase: float | None = None
    """SGLR: average only during the first avg_phase share of training (null: always)."""
    rec_weight: float = 0.1
    """LocFedMix: weight of the client-side reconstruction regularizer (decoder MSE)."""
    fedavg_interval: int = 1
    """LocFedMix: FedAvg of client segments every this many rounds (T_c)."""
    mix_alpha: float = 2.0
    """LocFedMix: server-side mixup coefficient lambda ~ Beta(mix_alpha, mix_alpha)."""
    num_partners: int = 1
    """LocFedMix: mixing partners per client (0: no mixup)."""
    server_interval: int = 5
    """CSE-FSL / FSL-SAGE: activations go to the server every q steps (step 0 included)."""
    align_interval: int = 10
    """FSL-SAGE: fit the clients' auxiliary models every l rounds."""
    buffer_size: int = 1000
    """FSL-SAGE: activations kept per client on the server for the alignment."""
    align_epochs: int = 5
    """FSL-SAGE: epochs over the buffer per alignment."""
    align_lr: float = 0.001
    """FSL-SAGE: Adam learning rate of the alignment."""
    round_steps: int | None = None
    """SplitFed / FedAvg: steps per round, FedAvg after each (null: one epoch; must divide
    the steps per epoch so every epoch's evaluation sees averaged models)."""


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
    """torch intra-op threads per process (null: cores / processes). Equal thread counts
    make 1-process and N-process runs agree to the last bit; unequal ones only to float
    reduction-order noise, which GAPSL's discrete leader choice can amplify."""
    ckpt_every: int = 1
    """Write <output_dir>/checkpoints/last.ckpt every this many epochs (0: only on SIGUSR1)."""
    eval_every: int = 1
    """Evaluate every this many epochs; must divide max_epochs; 0 = never (benchmarks)."""
    precision: str = "32-true"
    """Lightning precision: 32-true | bf16-mixed (autocast forwards; weights, optimizer
    state and the cut-layer traffic stay float32 where the layers return float32)."""


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


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    seed: int = 0
    """Run seed; per-client randomness is derived from (seed, client id)."""
    ckpt_path: str | None = None
    """Checkpoint to resume from."""
    output_dir: str = "outputs/run"
    """Folder for summary.json, logs and checkpoints."""

    @property
    def num_client_ranks(self) -> int:
        """Processes that host clients: all but the server rank, or the one process."""
        return max(self.trainer.devices - 1, 1)

    @property
    def is_split(self) -> bool:
        return self.algorithm.name in SPLIT_ALGORITHMS


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "algorithm": AlgorithmConfig,
    "trainer": TrainerConfig,
    "logger": LoggerConfig,
    "latency": LatencyConfig,
}
_TOP_LEVEL = {"seed", "ckpt_path", "output_dir", "hydra"}


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
            return float(value)
        if type_name.startswith("str"):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a valid {type_name}") from None
    return value


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def validate(cfg: RunConfig) -> RunConfig:
    """Check every value and every cross-field rule; return ``cfg`` unchanged."""
    d, m, o, a, t = cfg.data, cfg.model, cfg.optim, cfg.algorithm, cfg.trainer
    _choice("algorithm", a.name, ALGORITHMS)
    _choice("data", d.name, DATASETS)
    _choice("data.partition", d.partition, PARTITIONS)
    _choice("model", m.name, MODELS)
    _choice("model.client_exec", m.client_exec, CLIENT_EXECS)
    _choice("optim", o.name, OPTIMIZERS)
    _choice("logger", cfg.logger.name, LOGGERS)
    _choice("trainer.accelerator", t.accelerator, ACCELERATORS)
    _choice("trainer.start_method", t.start_method, START_METHODS)
    _choice("trainer.precision", t.precision, PRECISIONS)
    _choice("algorithm.reading", a.reading, READINGS)
    _choice("algorithm.align_mode", a.align_mode, ALIGN_MODES)
    _choice("algorithm.client_grad", a.client_grad, CLIENT_GRADS)
    _check(d.num_clients >= 1, f"data.num_clients={d.num_clients} must be >= 1")
    _check(d.alpha > 0 and math.isfinite(d.alpha), f"data.alpha={d.alpha} must be > 0")
    _check(d.shards_per_client >= 1, f"data.shards_per_client={d.shards_per_client} must be >= 1")
    _check(d.batch_size >= 1, f"data.batch_size={d.batch_size} must be >= 1")
    _check(d.eval_batch_size >= 1, f"data.eval_batch_size={d.eval_batch_size} must be >= 1")
    for key in ("max_train", "max_test", "steps_per_epoch"):
        value = getattr(d, key)
        _check(value is None or value >= 1, f"data.{key}={value} must be >= 1 or null")
    _check(len(d.shape) == 3 and min(d.shape) >= 1, f"data.shape={list(d.shape)} must be [C, H, W]")
    _check(o.lr > 0, f"optim.lr={o.lr} must be > 0")
    _check(0 <= o.momentum < 1, f"optim.momentum={o.momentum} must be in [0, 1)")
    _check(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} must be >= 0")
    _check(0 < a.rho <= 1, f"algorithm.rho={a.rho} must be in (0, 1]")
    _check(a.tau is None or -1 <= a.tau <= 1, f"algorithm.tau={a.tau} must be in [-1, 1] or null")
    _check(0 <= a.beta < 1, f"algorithm.beta={a.beta} must be in [0, 1)")
    _check(0 <= a.lam <= 1, f"algorithm.lam={a.lam} must be in [0, 1]")
    _check(0 <= a.lr_exponent <= 2, f"algorithm.lr_exponent={a.lr_exponent} must be in [0, 2]")
    _check(0 <= a.avg_fraction <= 1, f"algorithm.avg_fraction={a.avg_fraction} must be in [0, 1]")
    _check(a.avg_phase is None or 0 <= a.avg_phase <= 1,
           f"algorithm.avg_phase={a.avg_phase} must be in [0, 1] or null")
    _check(a.rec_weight >= 0, f"algorithm.rec_weight={a.rec_weight} must be >= 0")
    _check(a.fedavg_interval >= 1, f"algorithm.fedavg_interval={a.fedavg_interval} must be >= 1")
    _check(a.mix_alpha > 0, f"algorithm.mix_alpha={a.mix_alpha} must be > 0")
    _check(0 <= a.num_partners < max(d.num_clients, 2),
           f"algorithm.num_partners={a.num_partners} must be in [0, data.num_clients - 1]")
    for key in ("server_interval", "align_interval", "buffer_size", "align_epochs"):
        _check(getattr(a, key) >= 1, f"algorithm.{key}={getattr(a, key)} must be >= 1")
    _check(a.align_lr > 0, f"algorithm.align_lr={a.align_lr} must be > 0")
    _check(a.round_steps is None or a.round_steps >= 1,
           f"algorithm.round_steps={a.round_steps} must be >= 1 or null")
    _check(m.cut_layer >= 1, f"model.cut_layer={m.cut_layer} must be >= 1")
    _check(t.devices >= 1, f"trainer.devices={t.devices} must be >= 1 (processes, server included)")
    _check(t.max_epochs >= 1, f"trainer.max_epochs={t.max_epochs} must be >= 1")
    _check(t.timeout_s > 0, f"trainer.timeout_s={t.timeout_s} must be > 0")
    _check(t.ckpt_every >= 0, f"trainer.ckpt_every={t.ckpt_every} must be >= 0 (0: off)")
    _check(t.eval_every >= 0, f"trainer.eval_every={t.eval_every} must be >= 0 (0: never)")
    _check(
        t.eval_every == 0 or t.max_epochs % t.eval_every == 0,
        f"trainer.eval_every={t.eval_every} must divide trainer.max_epochs={t.max_epochs} "
        "so the final models are evaluated (or 0: never evaluate)",
    )
    _check(t.threads is None or t.threads >= 1, f"trainer.threads={t.threads} must be >= 1 or null")
    _check(a.name != "sl" or o.name == "sgd",
           "algorithm=sl hands the segment on with its SGD momentum; use optim=sgd")
    if t.devices > 1:
        _check(
            cfg.is_split,
            f"algorithm={a.name} runs in one process; set trainer.devices=1 "
            f"(multi-process runs: {', '.join(SPLIT_ALGORITHMS)})",
        )
        _check(
            t.devices - 1 <= d.num_clients,
            f"trainer.devices={t.devices} gives {t.devices - 1} client ranks but "
            f"data.num_clients={d.num_clients}; use trainer.devices <= {d.num_clients + 1}",
        )
    if cfg.ckpt_path is not None:
        _check(os.path.isfile(cfg.ckpt_path), f"ckpt_path={cfg.ckpt_path!r}: no such file")
    return cfg


def build_config(raw: Mapping[str, Any]) -> RunConfig:
    """Turn the composed (resolved) Hydra config into a validated ``RunConfig``."""
    unknown = sorted(set(raw) - set(_SECTIONS) - _TOP_LEVEL)
    if unknown:
        valid = ", ".join(sorted(set(_SECTIONS) | _TOP_LEVEL - {"hydra"}))
        raise ConfigError(f"unknown key {unknown[0]}; valid top-level keys: {valid}")
    sections = {key: _section(key, cls, raw.get(key)) for key, cls in _SECTIONS.items()}
    top = {
        "seed": _coerce("seed", "int", raw.get("seed", 0)),
        "ckpt_path": _coerce("ckpt_path", "str | None", raw.get("ckpt_path")),
        "output_dir": _coerce("output_dir", "str", raw.get("output_dir", "outputs/run")),
    }
    return validate(RunConfig(**sections, **top))
