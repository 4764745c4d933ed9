"""Your own model and data: PSL and GAPSL on tabular features with an MLP.

    python examples/own_model_and_data.py

The model is any function (input_shape, num_classes) -> nn.Module whose children run in
order; ``model.cut=act`` gives the client every child up to and including ``act``. The
data is a dict of tensors of any sample shape (here (n, 20) features); the validation
split, the Dirichlet partition over 8 clients and the 3 processes (1 server, 2 client
ranks) are the library's, exactly as for the built-in data sets.
"""

from collections import OrderedDict

import torch
from torch import nn

import lightning_gapsl


def mlp(input_shape, num_classes):
    (features,) = input_shape
    return nn.Sequential(
        OrderedDict(embed=nn.Linear(features, 64), act=nn.ReLU(), head=nn.Linear(64, num_classes))
    )


def tabular(n, seed):
    """Four classes from two noisy linear rules over 20 features."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 20, generator=gen)
    y = (x[:, :3].sum(1) > 0).long() + 2 * (x[:, 3] > 0).long()
    return x, y


if __name__ == "__main__":
    (train_x, train_y), (test_x, test_y) = tabular(4000, 0), tabular(1000, 1)
    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
    for method in ("psl", "gapsl"):
        summary = lightning_gapsl.run(
            [
                f"algorithm={method}",
                "model.cut=act",
                "data.num_clients=8",
                "trainer.devices=3",
                "trainer.max_epochs=3",
                "logger=none",
                "trainer.progress_bar=false",
            ],
            model=mlp,
            data=data,
            output_dir=f"outputs/example/{method}",
        )
        print(
            f"{method}: test accuracy {summary['test_acc_mean']:.4f} (mean over clients), "
            f"{summary['bytes_up'] / 1e6:.2f} MB up"
        )
