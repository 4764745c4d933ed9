"""What reaches the server in each method (docs/explanations/privacy.md, exposure flags): each method's
`Method.exposure` (built from the profiles below), printed beside the leakage numbers.

``threat`` says whether the inversion attack is **realistic** (the server receives the
client weights, so it can fit a white-box attack) or a **bound** (weights never reach
the server: it would need query access to the client segment). Labels reach the server
in every method with a server, so label-leakage attacks on gradients do not apply here.
``virtual_cut``: the method has no cut (FedAvg, centralized); its model's first
``model.cut_layer`` blocks are evaluated as a virtual one. ``defenses``: which of
``defense.activation_noise`` / ``defense.nopeek`` its step applies.
"""

from __future__ import annotations

EVERY_STEP = "every step"
PSL_FAMILY = {
    "smashed_data": EVERY_STEP,
    "labels": EVERY_STEP,
    "client_weights": "never",
    "auxiliary_models": "none",
    "threat": "bound",
    "virtual_cut": False,
    "defenses": "noise+nopeek",
}
WEIGHTS_EVERY_ROUND = {**PSL_FAMILY, "client_weights": "every round", "threat": "realistic"}
AUXILIARY = {
    **WEIGHTS_EVERY_ROUND,
    "smashed_data": "every q-th step",
    "cut_gradient": "none (auxiliary model)",
    "auxiliary_models": "auxiliary models",
    "defenses": "noise",
}
NO_CUT = {
    "smashed_data": "none",
    "labels": "none",
    "cut_gradient": "none",
    "auxiliary_models": "none",
    "threat": "realistic",
    "virtual_cut": True,
    "defenses": "none",
}

FLAG_KEYS = (
    "smashed_data",
    "labels",
    "cut_gradient",
    "client_weights",
    "auxiliary_models",
    "threat",
    "virtual_cut",
    "defenses",
)


def exposure(method: str) -> dict:
    """The flags of ``method`` (its `Method.exposure`); KeyError when it declares none (a
    method must say what it exposes before its leakage is reported)."""
    from lightning_gapsl.registry import METHODS

    flags = METHODS.get(method).exposure
    if flags is None:
        raise KeyError(
            f"method {method!r} declares no exposure flags; give its Method "
            "exposure={...} (lightning_gapsl/privacy/exposure.py lists the keys)"
        )
    return flags


def methods_with(defenses: str) -> list[str]:
    """The methods whose step applies these defenses (for error messages)."""
    from lightning_gapsl.registry import METHODS

    return [
        name
        for name in METHODS.names()
        if (METHODS.get(name).exposure or {}).get("defenses") == defenses
    ]
