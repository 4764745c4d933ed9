"""When the methods with local client updates (CSE-FSL, FSL-SAGE) send activations up."""

from __future__ import annotations


def server_step_due(step: int, q: int) -> bool:
    """Whether activations go to the server at ``step``: every ``q``-th step, step 0 included."""
    if q < 1:
        raise ValueError(f"algorithm.server_interval must be >= 1, got {q}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return step % q == 0
