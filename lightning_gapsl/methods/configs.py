"""Config pieces several methods share: the PSL gradient convention and FedAvg rounds.

Each method's config dataclass (in its own file) is built from the ``algorithm``
section by `lightning_gapsl.config.build_config`, which rejects keys the method does
not have, and checked by its ``validate(run_cfg)``, once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_gapsl.config import RunConfig, check, choice, partial_participation

CLIENT_GRADS = ("own", "weighted")


@dataclass(frozen=True)
class SplitConfig:
    name: str = "psl"
    """The method's registry name (``algorithm=``)."""
    client_grad: str = "own"
    """own: client i receives d(own mean loss)/dz_i; weighted: d(server loss)/dz_i."""

    def validate(self, run: RunConfig) -> None:
        choice("algorithm.client_grad", self.client_grad, CLIENT_GRADS)


ROUND_MODES = ("local_pass", "lockstep")


@dataclass(frozen=True)
class RoundConfig:
    name: str = "fedavg"
    """The method's registry name (``algorithm=``)."""
    rounds: str = "local_pass"
    """local_pass: a round (= an epoch) is one pass of every client over its own data,
    client i active for ceil(n_i / B) steps (SplitFed's and FSL-SAGE's code); lockstep:
    every client draws B samples every step, a round is round_steps steps."""
    round_steps: int | None = None
    """lockstep only: steps per round, FedAvg after each (null: one epoch; must divide
    the steps per epoch so every epoch's evaluation sees averaged models)."""

    def validate(self, run: RunConfig) -> None:
        choice("algorithm.rounds", self.rounds, ROUND_MODES)
        check(
            self.round_steps is None or self.round_steps >= 1,
            f"algorithm.round_steps={self.round_steps} must be >= 1 or null",
        )
        if self.rounds == "local_pass":
            check(
                self.round_steps is None,
                "algorithm.round_steps is for algorithm.rounds=lockstep; a local-pass "
                "round is one pass over every client's data (set rounds=lockstep)",
            )
            check(
                run.data.steps_per_epoch is None,
                "data.steps_per_epoch is for algorithm.rounds=lockstep; a local-pass epoch "
                "is one pass over every client's data (set algorithm.rounds=lockstep)",
            )


def local_pass_epoch(cfg: RunConfig, sizes, batch_size: int) -> int | None:
    """`Method.epoch_steps` of the averaging methods: with local-pass rounds an epoch is
    one round, max_i ceil(n_i / B) steps; None (lockstep): the default epoch."""
    from lightning_gapsl.data.rounds import round_length

    if cfg.algorithm.rounds != "local_pass":
        return None
    return round_length(sizes, batch_size)


def check_round_steps(cfg: RunConfig, data) -> None:
    """`Method.check_data` of the averaging methods: lockstep rounds divide the epoch."""
    rounds = cfg.algorithm.round_steps
    check(
        rounds is None or data.steps_per_epoch % rounds == 0,
        f"algorithm.round_steps={rounds} must divide the {data.steps_per_epoch} steps per "
        "epoch (set data.steps_per_epoch or pick a divisor), so every evaluation sees "
        "averaged models",
    )


TURN_MODES = ("epoch", "batch")


@dataclass(frozen=True)
class TurnConfig:
    """What one client's turn is in a sequential method (SL, SplitFed V2)."""

    turns: str = "epoch"
    """epoch: a turn is one pass over the client's own data, then the next client's
    (SplitFed's code, SL_ResNet_HAM10000.py / SFLV2_ResNet_HAM10000.py); an epoch is one
    round, sum_i ceil(n_i / B) steps of one client each. batch: every step each client
    in turn trains on one batch (CycleSL's convention; this project's before)."""
    turn_order: str = "random"
    """epoch turns only: random (a new order every round, SplitFed's code) or id."""

    def validate_turns(self, run: RunConfig) -> None:
        from lightning_gapsl.data.rounds import TURN_ORDERS

        choice("algorithm.turns", self.turns, TURN_MODES)
        choice("algorithm.turn_order", self.turn_order, TURN_ORDERS)
        if self.turns == "epoch":
            check(
                run.data.steps_per_epoch is None,
                "data.steps_per_epoch is for algorithm.turns=batch; with whole-epoch turns "
                "an epoch is one pass over every client's data (set algorithm.turns=batch)",
            )


def check_turns_participation(turns: TurnConfig, run: RunConfig) -> None:
    """Partial participation takes one-batch turns: with whole-epoch turns a round's
    length would depend on which clients were drawn."""
    check(
        not (partial_participation(run) and turns.turns == "epoch"),
        f"partial participation (participation.*) with algorithm={run.algorithm.name} needs "
        "algorithm.turns=batch: with whole-epoch turns a round's length would depend on "
        "the clients drawn",
    )


def turn_schedule(cfg: RunConfig, sizes, batch_size: int):
    """The `Turns` of whole-epoch turns (every client's size, so every rank agrees), or
    None for one-batch turns and for methods without turns."""
    from lightning_gapsl.data.rounds import Turns

    if getattr(cfg.algorithm, "turns", None) != "epoch":
        return None
    return Turns(tuple(int(n) for n in sizes), batch_size, cfg.algorithm.turn_order, cfg.seed)


def turn_epoch(cfg: RunConfig, sizes, batch_size: int) -> int | None:
    """`Method.epoch_steps` with whole-epoch turns: one round, sum_i ceil(n_i / B) steps
    (a `Turns` costs nothing to build: its orders are drawn when first asked for)."""
    turns = turn_schedule(cfg, sizes, batch_size)
    return turns.length if turns is not None else None
