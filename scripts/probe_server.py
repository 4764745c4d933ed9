"""Watch the server segment during the first steps of one run (a diagnosis tool).

    python scripts/probe_server.py STEPS OVERRIDE...   (the train command's overrides)

Prints one line per step for the first STEPS steps: the server's weight norm, the fraction
of each ReLU layer's units active on the step's batch (all hosted clients' samples, through
client 0's segment), the server's accuracy on that batch and its predicted-class
histogram. A server whose units die shows as live fractions near 0 and one predicted
class. Used for FSL-SAGE's failed seeds at Dirichlet 0.1 (README, tuned comparison).
"""

from __future__ import annotations

import sys
import tempfile

import lightning as L
import torch

from lightning_gapsl.train import compose, run


class ServerProbe(L.Callback):
    def __init__(self, steps: int):
        self.steps, self.step = steps, 0  # steps since the start, over epochs

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        step, self.step = self.step, self.step + 1
        if step >= self.steps:
            trainer.should_stop = True
            return
        x, y = batch[0], batch[1]  # (K, B, C, H, W), (K, B)
        pooled = x.flatten(0, 1)  # (K*B, C, H, W)
        server, clients = module.state.server, module.state.clients
        live = []
        hooks = [
            m.register_forward_hook(
                lambda _m, _i, out: live.append((out > 0).flatten(1).any(0).float().mean().item())
            )
            for m in server.modules()
            if isinstance(m, torch.nn.ReLU)
        ]
        with torch.no_grad():
            logits = server(clients.forward_one(0, pooled))  # (K*B, classes)
        for hook in hooks:
            hook.remove()
        norm = torch.cat([p.flatten() for p in server.parameters()]).norm().item()
        predicted = logits.argmax(-1)
        acc = (predicted == y.flatten()).float().mean().item()
        counts = torch.bincount(predicted, minlength=logits.shape[-1]).tolist()
        print(
            f"step {step:4d}  server norm {norm:6.1f}  live units "
            f"{' '.join(f'{f:.2f}' for f in live)}  acc {acc:.3f}  predicted {counts}",
            flush=True,
        )


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python scripts/probe_server.py STEPS OVERRIDE...")
    torch.set_num_threads(1)
    cfg = compose(
        sys.argv[2:] + ["logger=none", "trainer.ckpt_every=0", "trainer.devices=1"],
        tempfile.mkdtemp(prefix="probe_server_"),
    )
    if cfg.algorithm.name in ("sfl_v1", "centralized", "fedavg"):
        sys.exit(f"algorithm={cfg.algorithm.name}: the probe needs one server segment")
    try:
        run(cfg, [ServerProbe(int(sys.argv[1]))])
    except RuntimeError as err:  # stopped before the summary: expected
        if "without writing" not in str(err):
            raise


if __name__ == "__main__":
    main()
