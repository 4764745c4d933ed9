"""Entry point: ``python -m lightning_gapsl.train KEY=VALUE ...`` (also ``lgapsl-train``).

Hydra composes `conf/`; `build_config` validates it once; `run` builds the data,
the Lightning Trainer with the split strategy, trains, and returns the path of
summary.json, which is printed as the last line. Bad input stops here, before any
rank starts, with one line naming the key (exit code 2).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from lightning_gapsl.lean_import import import_lightning

import_lightning()  # first: before anything of the package imports Lightning

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.multiprocessing import ProcessExitedException, ProcessRaisedException

from lightning_gapsl.callbacks.logging import TransientProgressBar, default_callbacks
from lightning_gapsl.callbacks.privacy import PrivacyCallback
from lightning_gapsl.callbacks.summary import SummaryCallback
from lightning_gapsl.callbacks.wandb_run import (
    WandbRunCloser,
    new_run_id,
    run_id_from_checkpoint,
)
from lightning_gapsl.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    check_resumable,
    last_checkpoint,
)
from lightning_gapsl.cli import check_command_line, config_dir, prepare_config_store
from lightning_gapsl.cli import compose as _compose
from lightning_gapsl.cluster import (
    check_gpu_processes,
    check_slurm_tasks,
    check_torchrun_world,
    is_externally_launched,
    lightning_process_grid,
    nccl_error_policy,
)
from lightning_gapsl.config import ConfigError, RunConfig, build_config
from lightning_gapsl.data.datasets import DataError
from lightning_gapsl.federated import FederatedData, build_federated_data
from lightning_gapsl.log_streams import rebind_lightning_handlers
from lightning_gapsl.methods import get_method
from lightning_gapsl.models import ModelError, cut_index, num_cut_choices
from lightning_gapsl.models.split import check_cut
from lightning_gapsl.module import SplitLearningModule
from lightning_gapsl.registry import RegistryError
from lightning_gapsl.strategy import SplitStrategy
from lightning_gapsl.transport import TransportError

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError, RegistryError)
RUN_ERRORS = (TransportError, FloatingPointError, ProcessExitedException, ProcessRaisedException)


def _run_error_message(err: Exception) -> str:
    if isinstance(err, ProcessExitedException):
        how = f"signal {err.signal_name}" if err.signal_name else f"exit code {err.exit_code}"
        return f"rank {err.error_index} died ({how}); the other ranks were stopped"
    if isinstance(err, ProcessRaisedException):
        # The rank's own traceback text: keep its last line, the actual error.
        last = str(err).strip().splitlines()[-1]
        name, _, message = last.partition(": ")
        if name.rsplit(".", 1)[-1] in ("TransportError", "CheckpointError"):
            return message  # names the rank at fault itself (not the one that noticed)
        return f"rank {err.error_index} failed: {last}"
    return str(err)


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's tip advertising another logging product (nothing to act on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertisement())


rebind_lightning_handlers()

# Lightning's advice for data-parallel training does not apply: our dataloader yields
# whole per-step client batches by design, and there is no validation metric to sync.
for pattern in (
    ".*does not have many workers.*",
    ".*sync_dist=True.*",
    ".*Checkpoint directory.*exists and is not empty.*",
    r".*isinstance\(treespec, LeafSpec\).*",
):
    warnings.filterwarnings("ignore", message=pattern)


def _check_output_dir(path: str) -> None:
    """Create ``path`` if needed and check that files can be written in it.

    The probe is an unnamed temporary file (O_TMPFILE on Linux): an existing folder
    gets no new entry, even for a run that stops at a later check.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"output_dir={path!r} is not writable: {err.strerror}") from None


def _cuda_device_count() -> int:
    """GPUs visible here, counted as Lightning counts them before it forks ranks (NVML,
    no CUDA context: a context in the parent would break forked GPU ranks)."""
    from lightning.fabric.accelerators.cuda import num_cuda_devices

    return num_cuda_devices()


def preflight(cfg: RunConfig) -> FederatedData:
    """Everything that can fail on bad input, done once in the launching process."""
    t = cfg.trainer
    check_slurm_tasks(t.devices, os.environ)
    check_torchrun_world(t.devices, os.environ)
    check_gpu_processes(t.accelerator, t.devices, os.environ, _cuda_device_count())
    lightning_process_grid(t.devices, t.accelerator, os.environ)  # raises if inexpressible
    _check_output_dir(cfg.output_dir)
    data = build_federated_data(cfg)
    check_data(cfg, data)
    return data


def check_data(cfg: RunConfig, data: FederatedData) -> None:
    """The checks that need the loaded data: the cut, what needs images, the method's own."""
    ds = data.dataset
    blocks = num_cut_choices(cfg.model, ds.input_shape, ds.num_classes) + 1
    check_cut(cut_index(cfg.model, ds.input_shape, ds.num_classes), blocks)
    for needs_images, key in (
        (cfg.data.augmented, "data.augment"),
        (cfg.privacy.mode != "off", "privacy"),
    ):
        if needs_images and not ds.is_image:
            raise ConfigError(
                f"{key} works on images (C, H, W); data={cfg.data.name} has "
                f"samples of shape {ds.input_shape} (set {key}="
                f"{'false' if key == 'data.augment' else 'off'})"
            )
    method = get_method(cfg.algorithm.name)
    if method.check_data is not None:
        method.check_data(cfg, data)


def with_cut(cfg: RunConfig, data: FederatedData) -> RunConfig:
    """``model.cut`` (a child's name or index) as the ``model.cut_layer`` every part reads."""
    if cfg.model.cut is None:
        return cfg
    ds = data.dataset
    cut = cut_index(cfg.model, ds.input_shape, ds.num_classes)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, cut_layer=cut))


def build_logger(cfg: RunConfig, wandb_id: str | None = None):
    lg = cfg.logger
    if lg.name == "none":
        return False
    if lg.name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=cfg.output_dir, name="csv", version="")
    from lightning.pytorch.loggers import WandbLogger

    kwargs = {"mode": lg.mode} if lg.mode else {}
    return WandbLogger(
        project=lg.project,
        entity=lg.entity,
        save_dir=cfg.output_dir,
        config=dataclasses.asdict(cfg),
        id=wandb_id,
        resume="allow",  # a resumed training run continues its W&B run (same id)
        **kwargs,
    )


def build_trainer(
    cfg: RunConfig, extra_callbacks: list | None = None, wandb_id: str | None = None
) -> L.Trainer:
    t = cfg.trainer
    # Under SLURM or torchrun every rank is a process already: "popen" makes Lightning
    # attach to it instead of forking `devices` more processes from each one.
    start_method = "popen" if is_externally_launched(os.environ) else t.start_method
    per_node, num_nodes = lightning_process_grid(t.devices, t.accelerator, os.environ)
    strategy = (
        SplitStrategy(timeout_s=t.timeout_s, start_method=start_method) if t.devices > 1 else "auto"
    )
    return L.Trainer(
        accelerator=t.accelerator,
        devices=per_node,
        num_nodes=num_nodes,
        strategy=strategy,
        plugins=[AtomicCheckpointIO()] if t.devices == 1 else None,
        max_epochs=t.max_epochs,
        precision=t.precision,
        logger=build_logger(cfg, wandb_id),
        callbacks=[
            *([PrivacyCallback(cfg)] if cfg.privacy.mode != "off" else []),
            SummaryCallback(cfg),
            *default_callbacks(),
            *([WandbRunCloser(wandb_id)] if cfg.logger.name == "wandb" else []),
            *([TransientProgressBar()] if t.progress_bar else []),
            *(extra_callbacks or []),
        ],
        enable_progress_bar=t.progress_bar,
        enable_checkpointing=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,  # the module decides which epochs evaluate
        limit_val_batches=0 if t.eval_every == 0 else None,
        use_distributed_sampler=False,
        log_every_n_steps=10,
        default_root_dir=cfg.output_dir,
    )


CONF_DIR = config_dir()


def compose(overrides: list[str], output_dir: str) -> RunConfig:
    """The validated config for Hydra-style ``overrides`` without starting a Hydra app.

    Used by tests, the benchmark and the comparison runner, so they go through the same
    config files and checks as the command line.
    """
    return _compose(overrides, output_dir)


def resolve_threads(cfg: RunConfig, environ: Mapping[str, str]) -> RunConfig:
    """``trainer.threads=null`` -> ``$OMP_NUM_THREADS`` if set, else 1.

    The same count in every process, however many processes there are: conv backward
    sums in thread-sized chunks, so equal counts keep 1-process and N-process runs
    bit-identical. (Lightning's own default, cores / processes, does not.)
    """
    if cfg.trainer.threads is not None:
        return cfg
    raw = environ.get("OMP_NUM_THREADS", "")
    threads = int(raw) if raw.isdigit() and int(raw) >= 1 else 1
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, threads=threads))


def resume_path(cfg: RunConfig) -> str | None:
    """``ckpt_path``, or after a SLURM requeue the run's own last checkpoint."""
    if cfg.ckpt_path is not None:
        return cfg.ckpt_path
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    last = last_checkpoint(cfg.output_dir)
    return last if requeued and os.path.isfile(last) else None


def run(cfg: RunConfig, extra_callbacks: list | None = None) -> Path | None:
    """Train one configuration; return the path of its summary.json (None if pre-empted)."""
    cfg = resolve_threads(cfg, os.environ)
    # Ranks started by Lightning (fork, popen) inherit it, and Lightning leaves it alone.
    os.environ["OMP_NUM_THREADS"] = str(cfg.trainer.threads)
    # Before any process group exists; srun/torchrun ranks each run this function too.
    os.environ.update(nccl_error_policy(os.environ))
    data = preflight(cfg)
    cfg = with_cut(cfg, data)
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    module = SplitLearningModule(cfg, data)
    resume = resume_path(cfg)
    wandb_id = None
    if resume is not None:  # bad checkpoints stop here, before any rank starts
        checkpoint = check_resumable(resume, module._identity(), cfg.trainer.devices)
        wandb_id = run_id_from_checkpoint(checkpoint)
        del checkpoint
    if cfg.logger.name == "wandb" and wandb_id is None:
        wandb_id = new_run_id()
    trainer = build_trainer(cfg, extra_callbacks, wandb_id)
    trainer.fit(module, ckpt_path=resume)
    if trainer.global_rank != 0:
        return None  # a client rank started by srun/torchrun: the server reports
    path = Path(cfg.output_dir) / "summary.json"
    # The launching process of forked ranks only sees files; a rank process knows.
    if path.is_file() and module.preempted_at is None:
        return path
    last = last_checkpoint(cfg.output_dir)
    if os.path.isfile(last):
        print(f"pre-empted: resume with ckpt_path={last}", file=sys.stderr)
        return None
    raise RuntimeError(f"training ended without writing {path}")


def _app(raw: DictConfig) -> None:
    try:
        cfg = build_config(OmegaConf.to_container(raw, resolve=True))
        path = run(cfg)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RUN_ERRORS as err:
        # A rank died, timed out or diverged: say which, once, without a traceback.
        print(f"error: {_run_error_message(err)}", file=sys.stderr)
        # Leave now: the interpreter's clean-up would wait seconds on the process group of
        # a peer that hangs. The W&B run is finished already (``on_exception``).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    if path is not None:
        print(path.resolve())


_hydra_main = hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")(_app)


def main() -> None:
    """``lgapsl-train``: bad overrides stop with one line before Hydra writes anything."""
    try:
        prepare_config_store(sys.argv[1:])  # plugins first: they add config options
        check_command_line(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
