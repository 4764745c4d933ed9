"""The typed ``privacy`` and ``defense`` sections (validated with the rest of the run
config, `lightning_gapsl.config.validate`). Imports nothing of the package at import
time, so `lightning_gapsl.config` can import it."""

from __future__ import annotations

from dataclasses import dataclass

PRIVACY_MODES = ("off", "fast", "full")


@dataclass(frozen=True)
class PrivacyConfig:
    mode: str = "off"
    """off | fast (distance correlation + ridge attacker on three clients: the first, the
    median-size and the largest) | full (both on every client, plus the conv decoder on
    those three). Run once after training, on the final client segments."""
    seed: int = 0
    """Seeds the conv decoders and the evaluation's noise draws; independent of the run seed."""
    aux_size: int = 5000
    """Auxiliary images the server fits its attack on: the first ones of the test set."""
    pool_size: int = 2000
    """Evaluation images after the auxiliary ones (scores and distance correlation)."""
    all_clients: bool = False
    """fast: the ridge attacker and distance correlation on every client instead of three
    (full always evaluates every client with them)."""
    conv_epochs: int = 10
    """Training epochs of the conv decoder (full only; about 30 s each for LeNet on MNIST
    on one core; 10 epochs reach a lower pool MSE than the ridge attacker)."""


@dataclass(frozen=True)
class DefenseConfig:
    activation_noise: float = 0.0
    """Gaussian noise added to the smashed data a client sends, sigma in units of the
    activations' std (of that client's batch); 0 = off. The server (and its attack)
    sees the noisy activations; the client's own evaluation does not add noise."""
    nopeek: float = 0.0
    """Weight of the NoPeek loss on the client: the bias-corrected distance correlation
    between a client's batch and its activations, added to the client's objective; 0 = off."""


def validate_privacy(cfg) -> None:
    """Check the ``privacy`` and ``defense`` sections of a RunConfig (raises ConfigError).

    The defenses need smashed data reaching the server and a step that applies them
    (the method's flags in `lightning_gapsl.privacy.exposure`).
    """
    from lightning_gapsl.checks import check, choice
    from lightning_gapsl.privacy.exposure import methods_with
    from lightning_gapsl.registry import METHODS

    p, d, method = cfg.privacy, cfg.defense, cfg.algorithm.name
    choice("privacy", p.mode, PRIVACY_MODES)
    flags = METHODS.get(method).exposure
    if flags is None:  # a method that does not say what reaches the server
        check(
            p.mode == "off" and d.activation_noise == 0 and d.nopeek == 0,
            f"algorithm={method} declares no exposure flags (Method.exposure, see "
            "lightning_gapsl/privacy/exposure.py), which privacy and defense.* need; "
            "set privacy=off, defense.activation_noise=0, defense.nopeek=0",
        )
        return
    check(p.aux_size >= 20, f"privacy.aux_size={p.aux_size} must be >= 20")
    check(p.pool_size >= 8, f"privacy.pool_size={p.pool_size} must be >= 8")
    check(p.conv_epochs >= 1, f"privacy.conv_epochs={p.conv_epochs} must be >= 1")
    check(
        d.activation_noise >= 0,
        f"defense.activation_noise={d.activation_noise} must be >= 0 (sigma in units of "
        "the activations' std; 0 = off)",
    )
    check(d.nopeek >= 0, f"defense.nopeek={d.nopeek} must be >= 0 (0 = off)")
    if d.activation_noise > 0:
        check(
            flags["defenses"] != "none",
            f"defense.activation_noise is for methods that send smashed data; "
            f"algorithm={method} sends none",
        )
    if d.nopeek > 0:
        check(
            flags["defenses"] == "noise+nopeek",
            f"defense.nopeek is implemented for algorithm="
            f"{'|'.join(methods_with('noise+nopeek'))}, not for algorithm={method}",
        )
