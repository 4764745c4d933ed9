"""The leakage results beside accuracy and bytes: a table (with the reference rows and the
exposure flags), a plot of accuracy against leakage and the picture of the same 8 pool
images reconstructed for each method.

    python -m lightning_gapsl.privacy.report OUT_DIR RUN_DIR [RUN_DIR ...]

reads each run folder's summary.json (and privacy_recon.pt) and writes
OUT_DIR/privacy.md, privacy_acc_vs_leakage.png and privacy_reconstructions.png. The
comparison tool calls `write_privacy` itself when its runs have a ``privacy`` block.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch

COLUMNS = ("leakage", "leakage_worst", "leakage_ssim", "psnr", "ssim", "dcor")
THREAT_NOTE = (
    "Threat model: an honest-but-curious server that fits an inversion attack on public "
    "auxiliary images (the first test images) for each client's final segment. "
    "*realistic*: the method sends client weights to the server (white-box attack); "
    "*bound*: it never does, so the attack is a worst-case bound (the server would need "
    "query access). Labels reach the server in every method with a server, so label "
    "attacks on gradients do not apply. Leakage index: 0 = a constant client (the mean "
    "image), 1 = the identity client (a = x), same attacker; the stronger attacker per "
    "client; mean over evaluated clients, and the worst client. The PSNR index is compressed "
    "by the identity client's very high PSNR (about 74 dB for the ridge attacker on MNIST); "
    "the same index on SSIM (*leak. SSIM*) reads closer to what the pictures show."
)


def privacy_columns(summary: dict) -> dict:
    """One run's numbers for the tables (empty without a privacy block)."""
    p = summary.get("privacy")
    if not p:
        return {}
    row = {k: p.get(k) for k in COLUMNS}  # .get: summaries written before a key existed
    row["leakage_ridge"] = p["mean"].get("leakage_ridge")
    row["leakage_conv"] = p["mean"].get("leakage_conv")
    row["threat"] = p["threat"]
    row.update({f"exp_{k}": v for k, v in p["exposure"].items()})
    return row


def _fmt(values: list, digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def privacy_markdown(summaries: list[dict], labels: list[str], title: str) -> str:
    """Mean ± std over seeds per label, the exposure flags, then the two reference rows."""
    lines = [
        f"### {title}: leakage",
        "",
        THREAT_NOTE,
        "",
        "| variant | runs | test acc | MB up+down | leakage (mean) | leakage (worst) | "
        "ridge | conv | leak. SSIM | SSIM | PSNR dB | dcor | threat | smashed data "
        "| cut gradient | client weights | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in dict.fromkeys(labels):
        runs = [
            s for s, v in zip(summaries, labels, strict=False) if v == label and s.get("privacy")
        ]
        if not runs:
            continue
        cols = [privacy_columns(s) for s in runs]
        flags = runs[0]["privacy"]["exposure"]
        acc = _fmt([100 * s["test_acc_mean"] for s in runs], 2)
        mb = _fmt([(s["bytes_up"] + s["bytes_down"]) / 1e6 for s in runs], 1)
        lines.append(
            f"| {label} | {len(runs)} | {acc} | {mb} | {_fmt([c['leakage'] for c in cols])} "
            f"| {_fmt([c['leakage_worst'] for c in cols])} "
            f"| {_fmt([c['leakage_ridge'] for c in cols])} "
            f"| {_fmt([c['leakage_conv'] for c in cols])} "
            f"| {_fmt([c['leakage_ssim'] for c in cols])} | {_fmt([c['ssim'] for c in cols])} "
            f"| {_fmt([c['psnr'] for c in cols], 1)} | {_fmt([c['dcor'] for c in cols])} "
            f"| {flags['threat']} | {flags['smashed_data']} | {flags['cut_gradient']} "
            f"| {flags['client_weights']} | {flags['auxiliary_models']} |"
        )
    refs = next((s["privacy"]["reference"] for s in summaries if s.get("privacy")), None)
    if refs:
        for name, leak in (("constant", 0.0), ("identity_ridge", 1.0), ("identity_conv", 1.0)):
            if name in refs:
                r = refs[name]
                lines.append(
                    f"| *reference: {name.replace('_', ' (')}{')' if '_' in name else ''}*"
                    f" | | | | {leak:.3f} | | | | {leak:.3f} | {r['ssim']:.3f} "
                    f"| {r['psnr']:.1f} | {r['dcor']:.3f} | | | | | |"
                )
    return "\n".join(lines) + "\n"


def plot_accuracy_vs_leakage(summaries: list[dict], labels: list[str], path: Path) -> Path:
    """Accuracy against leakage, one marker per run; marker area ~ bytes per round
    (per epoch here: the bytes of the whole run over its epochs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_gapsl.plots import _style

    fig, ax = plt.subplots(figsize=(6, 4.5))
    seen = set()
    order = list(dict.fromkeys(labels))
    per_epoch = [(s["bytes_up"] + s["bytes_down"]) / max(s["epochs"], 1) for s in summaries]
    biggest = max(per_epoch + [1.0])
    for s, label, b in zip(summaries, labels, per_epoch, strict=False):
        if not s.get("privacy"):
            continue
        colour, marker = _style(order.index(label))
        ax.scatter(
            s["privacy"]["leakage"],
            100 * s["test_acc_mean"],
            s=20 + 400 * b / biggest,
            color=colour,
            marker=marker,
            alpha=0.7,
            label=None if label in seen else label,
            edgecolors="k",
            linewidths=0.5,
        )
        seen.add(label)
    ax.set_xlabel("leakage index (0 = constant client, 1 = identity)")
    ax.set_ylabel("mean client test accuracy (%)")
    ax.grid(alpha=0.3)
    legend = ax.legend(fontsize=7, ncol=2)
    for handle in legend.legend_handles:  # one marker size in the legend
        handle.set_sizes([30])
    ax.set_title("accuracy against leakage (marker area: bytes per epoch)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reconstructions(recons: dict[str, dict], path: Path) -> Path:
    """``recons``: label -> a run's privacy_recon.pt dict. One row of originals, then per
    label the strongest available attacker's reconstructions of the same 8 pool images
    (the first evaluated client: client 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    originals = next(iter(recons.values()))["original"]  # (8, C, H, W)
    rows = [("original", originals)]
    for label, images in recons.items():
        key = next((k for k in ("0/conv", "0/ridge") if k in images), None)
        if key is None:
            key = next(k for k in images if k != "original")
        rows.append((f"{label} ({key.split('/')[1]})", images[key]))
    n = originals.shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 0.95), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = images[c].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_privacy(
    summaries: list[dict],
    labels: list[str],
    recons: list[dict | None],
    out_dir: Path,
    title: str,
) -> list[Path]:
    """privacy.md, the accuracy-leakage plot and the reconstruction picture (first run
    of each label with images: ``recons``, a run's privacy_recon.pt dict or None) in
    ``out_dir``; nothing when no run has a privacy block."""
    if not any(s.get("privacy") for s in summaries):
        return []
    out_dir = Path(out_dir)
    md = out_dir / "privacy.md"
    md.write_text(privacy_markdown(summaries, labels, title))
    paths = [
        md,
        plot_accuracy_vs_leakage(summaries, labels, out_dir / "privacy_acc_vs_leakage.png"),
    ]
    first: dict[str, dict] = {}
    for label, images in zip(labels, recons, strict=True):
        if images and label not in first:
            first[label] = images
    if first:
        paths.append(plot_reconstructions(first, out_dir / "privacy_reconstructions.png"))
    return paths


def load_recon(run_dir: Path) -> dict | None:
    """A run folder's privacy_recon.pt (None without one)."""
    file = Path(run_dir) / "privacy_recon.pt"
    return torch.load(file, weights_only=True) if file.is_file() else None


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-5], file=sys.stderr)
        print(
            "usage: python -m lightning_gapsl.privacy.report OUT_DIR RUN_DIR [RUN_DIR ...]",
            file=sys.stderr,
        )
        return 2
    out_dir, runs = Path(argv[0]), [Path(r) for r in argv[1:]]
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    labels = [s["algorithm"] for s in summaries]
    if len(set(labels)) < len(labels):  # the same method twice: label by folder
        labels = [r.name for r in runs]
    recons = [load_recon(r) for r in runs]
    for path in write_privacy(summaries, labels, recons, out_dir, "privacy"):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
