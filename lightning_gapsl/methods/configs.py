"""Config pieces several methods share: the PSL gradient convention and FedAvg rounds.

Each method's config dataclass (in its own file) is built from the ``algorithm``
section by `lightning_gapsl.config.build_config`, which rejects keys the method does
not have, and checked by its ``validate(run_cfg)``, once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightning_gapsl.config import RunConfig, check, choice

CLIENT_GRADS = ("own", "weighted")


@dataclass(frozen=True)
class SplitConfig:
    name: str = "psl"
    """The method's registry name (``algorithm=``)."""
    client_grad: str = "own"
    """own: client i receives d(own mean loss)/dz_i; weighted: d(server loss)/dz_i."""

    def validate(self, run: RunConfig) -> None:
        choice("algorithm.client_grad", self.client_grad, CLIENT_GRADS)


@dataclass(frozen=True)
class RoundConfig:
    name: str = "fedavg"
    """The method's registry name (``algorithm=``)."""
    round_steps: int | None = None
    """Steps per round, FedAvg after each (null: one epoch; must divide the steps per
    epoch so every epoch's evaluation sees averaged models)."""

    def validate(self, run: RunConfig) -> None:
        check(self.round_steps is None or self.round_steps >= 1,
              f"algorithm.round_steps={self.round_steps} must be >= 1 or null")


def round_ends(step: int, round_steps: int) -> bool:
    """True after the last step of a round (rounds of ``round_steps`` steps from step 0)."""
    return (step + 1) % round_steps == 0
