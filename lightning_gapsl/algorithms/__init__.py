"""Training algorithms as small pure functions over tensors.

`psl` holds parallel split learning's server loss and its identity gradient transform;
`gapsl` holds GAPSL's leader gradient identification (LGI), the EMA of the leader
gradient and gradient direction alignment (GDA). Nothing here touches
``torch.distributed`` or Lightning: the trainer gathers the tensors and calls these.
"""

from __future__ import annotations

from lightning_gapsl.algorithms.gapsl import (
    ALIGN_MODES,
    AlignResult,
    GapslConfig,
    LGIResult,
    align,
    batch_mean_flat,
    cosine_matrix,
    cut_layer_shift,
    ema,
    gapsl_step,
    identify_leaders,
    num_leaders,
)
from lightning_gapsl.algorithms.psl import (
    client_loss_weights,
    weighted_client_loss,
)

__all__ = [
    "ALIGN_MODES",
    "AlignResult",
    "GapslConfig",
    "LGIResult",
    "align",
    "batch_mean_flat",
    "client_loss_weights",
    "cosine_matrix",
    "cut_layer_shift",
    "ema",
    "gapsl_step",
    "identify_leaders",
    "num_leaders",
    "weighted_client_loss",
]
