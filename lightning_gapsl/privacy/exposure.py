"""What reaches the server in each method (PRIVACY.md, "Exposure flags"): one static
table keyed by the registry name, printed beside the leakage numbers.

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
PSL_FAMILY = {"smashed_data": EVERY_STEP, "labels": EVERY_STEP, "client_weights": "never",
              "auxiliary_models": "none", "threat": "bound", "virtual_cut": False,
              "defenses": "noise+nopeek"}
WEIGHTS_EVERY_ROUND = {**PSL_FAMILY, "client_weights": "every round", "threat": "realistic"}
AUXILIARY = {**WEIGHTS_EVERY_ROUND, "smashed_data": "every q-th step",
             "cut_gradient": "none (auxiliary model)", "auxiliary_models": "auxiliary models",
             "defenses": "noise"}
NO_CUT = {"smashed_data": "none", "labels": "none", "cut_gradient": "none",
          "auxiliary_models": "none", "threat": "realistic", "virtual_cut": True,
          "defenses": "none"}

EXPOSURE: dict[str, dict] = {
    "centralized": {**NO_CUT, "client_weights": "whole model held by the server",
                    "labels": "all (the server holds the data)"},
    "psl": {**PSL_FAMILY, "cut_gradient": "own"},
    "gapsl": {**PSL_FAMILY, "cut_gradient": "aligned to the leaders' direction"},
    "epsl": {**PSL_FAMILY, "cut_gradient": "own, a fraction phi aggregated over clients"},
    "sglr": {**PSL_FAMILY, "cut_gradient": "averaged over a fraction phi of clients"},
    "sfl_v1": {**WEIGHTS_EVERY_ROUND, "cut_gradient": "own"},
    "sfl_v2": {**WEIGHTS_EVERY_ROUND, "cut_gradient": "own"},
    "fedavg": {**NO_CUT, "client_weights": "full model every round"},
    "locfedmix": {**WEIGHTS_EVERY_ROUND, "cut_gradient": "own",
                  "client_weights": "every averaging",
                  "auxiliary_models": "decoder: the client loss rewards reconstructing x"},
    "cse_fsl": {**AUXILIARY},
    "fsl_sage": {**AUXILIARY},
    "sl": {**PSL_FAMILY, "cut_gradient": "own",
           "client_weights": "handed on between clients (not through the server)"},
}

FLAG_KEYS = ("smashed_data", "labels", "cut_gradient", "client_weights", "auxiliary_models",
             "threat", "virtual_cut", "defenses")


def exposure(method: str) -> dict:
    """The flags of ``method``; KeyError naming the table when a method has none (a new
    method must say what it exposes)."""
    if method not in EXPOSURE:
        raise KeyError(f"method {method!r} has no exposure flags in "
                       "lightning_gapsl/privacy/exposure.py; add its row")
    return EXPOSURE[method]


def methods_with(defenses: str) -> list[str]:
    """The methods whose step applies these defenses (for error messages)."""
    return [name for name, flags in EXPOSURE.items() if flags["defenses"] == defenses]
