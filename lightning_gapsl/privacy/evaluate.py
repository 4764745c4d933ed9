"""The leakage evaluation of a run's client segments (docs/explanations/privacy.md): which clients, what
the server sees of them, the two attackers, the reference rows and the aggregates.

Every rank evaluates the chosen clients it hosts (one fixed-width float64 row each);
the rows are all-gathered in client-id order and the server adds the reference rows and
writes the ``privacy`` block of summary.json. Nothing here depends on the layout: data,
seeds and client choice come from (privacy.seed, client id) and the data sizes.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from lightning_gapsl.privacy.attacks import conv_attack, ridge_attack
from lightning_gapsl.privacy.exposure import FLAG_KEYS, exposure
from lightning_gapsl.privacy.metrics import (
    distance_correlation_u,
    leakage_index,
    mse,
    psnr,
    ssim,
    u_centred_distances,
)
from lightning_gapsl.seeding import derive_seed, generator

SHOWN = 8  # pool images reconstructed for the picture
SCALARS = (
    "evaluated",
    "dcor",
    "ridge_psnr",
    "ridge_psnr_median",
    "ridge_ssim",
    "ridge_mse",
    "ridge_lambda",
    "conv_psnr",
    "conv_psnr_median",
    "conv_ssim",
    "conv_mse",
)


@dataclass(frozen=True)
class PrivacyData:
    """The attacker's auxiliary set and the evaluation pool, fixed by the test set alone."""

    x_aux: torch.Tensor  # (n_aux, C, H, W) model inputs (normalized like training)
    pix_aux: torch.Tensor  # (n_aux, C, H, W) the same images in pixel space [0, 1]
    x_pool: torch.Tensor  # (n_pool, C, H, W)
    pix_pool: torch.Tensor  # (n_pool, C, H, W)


def privacy_data(
    test_x: torch.Tensor, aux_size: int, pool_size: int, prepare=lambda x: x
) -> PrivacyData:
    """Auxiliary set = the first ``aux_size`` test images, pool = the next ``pool_size``
    (on a small test set: a quarter of it for the pool, the rest for the attacker).
    ``prepare`` turns stored images into model inputs (`DatasetSplit.prepare`: uint8
    pixels are normalized as a training batch is).

    Pixel space: the per-channel affine map that sends the auxiliary set's minimum to 0
    and maximum to 1: exactly the de-normalisation for MNIST, Fashion-MNIST, digits and
    CIFAR, whose images span the full range, without knowing each data set's constants.
    """
    n = test_x.shape[0]
    pool = min(pool_size, n // 4)
    aux = min(aux_size, n - pool)
    x_aux, x_pool = prepare(test_x[:aux]), prepare(test_x[aux : aux + pool])
    lo = x_aux.amin(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    span = (x_aux.amax(dim=(0, 2, 3), keepdim=True) - lo).clamp_min(1e-12)

    def to_pixels(x):
        return ((x - lo) / span).clamp(0.0, 1.0)

    return PrivacyData(x_aux, to_pixels(x_aux), x_pool, to_pixels(x_pool))


def chosen_clients(
    mode: str, sizes: torch.Tensor, one_model: bool, all_clients: bool = False
) -> tuple[list[int], list[int]]:
    """(clients for ridge + distance correlation, clients for the conv decoder).

    The three: the first, the median-size and the largest client (ties: lowest id).
    fast: ridge on the three (``all_clients``: on all), no decoder; full: ridge on all,
    decoder on the three.
    ``one_model``: every client holds the same model (FedAvg rounds, SL): client 0 alone.
    """
    if one_model:
        return [0], ([0] if mode == "full" else [])
    order = sorted(range(len(sizes)), key=lambda c: (float(sizes[c]), c))
    largest = max(range(len(sizes)), key=lambda c: (float(sizes[c]), -c))
    three = sorted({0, order[(len(order) - 1) // 2], largest})
    if mode == "full":
        return list(range(len(sizes))), three
    return (list(range(len(sizes))) if all_clients else three), []


def server_view(
    segment: nn.Module, x: torch.Tensor, sigma: float, seed: int, client: int, part: str
) -> torch.Tensor:
    """What the server receives for inputs x (n, C, H, W): the segment's activations
    (n, *F) on the CPU, plus ``defense.activation_noise`` noise (sigma x their std)."""
    first = next(iter(segment.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    with torch.no_grad():
        acts = torch.cat([segment(chunk.to(device)).float().cpu() for chunk in x.split(500)])
    if sigma > 0:
        noise = torch.randn(acts.shape, generator=generator(seed, "privacy_noise", client, part))
        acts = acts + sigma * acts.std() * noise
    return acts


def _scores(rec: torch.Tensor, pix: torch.Tensor) -> list[float]:
    p = psnr(rec, pix)
    return [
        float(p.mean()),
        float(p.median()),
        float(ssim(rec, pix).mean()),
        float(mse(rec, pix).mean()),
    ]


def row_width(image_shape: tuple[int, ...]) -> int:
    return len(SCALARS) + 2 * SHOWN * math.prod(image_shape)


def evaluate_client(
    segment: nn.Module, data: PrivacyData, ux_pool: torch.Tensor, cfg, client: int, conv: bool
) -> torch.Tensor:
    """One client's row (W,) float64: `SCALARS` (NaN where not computed), then the ridge
    and conv reconstructions of the first `SHOWN` pool images, flattened."""
    p, sigma = cfg.privacy, cfg.defense.activation_noise
    segment.eval()
    a_aux = server_view(segment, data.x_aux, sigma, p.seed, client, "aux")  # (n_aux, *F)
    a_pool = server_view(segment, data.x_pool, sigma, p.seed, client, "pool")  # (n_pool, *F)
    values = torch.full((row_width(data.pix_pool.shape[1:]),), math.nan, dtype=torch.float64)
    dcor = float(distance_correlation_u(ux_pool, u_centred_distances(a_pool)))
    rec, lam = ridge_attack(a_aux, data.pix_aux, a_pool)
    values[:7] = torch.tensor([1.0, dcor, *_scores(rec, data.pix_pool), lam], dtype=torch.float64)
    shown = SHOWN * math.prod(data.pix_pool.shape[1:])
    values[len(SCALARS) : len(SCALARS) + shown] = rec[:SHOWN].flatten().double()
    if conv:
        rec = conv_attack(
            a_aux,
            data.pix_aux,
            a_pool,
            derive_seed(p.seed, "decoder", client),
            epochs=p.conv_epochs,
        )
        values[7:11] = torch.tensor(_scores(rec, data.pix_pool), dtype=torch.float64)
        values[len(SCALARS) + shown :] = rec[:SHOWN].flatten().double()
    return values


def references(data: PrivacyData, cfg, conv: bool) -> dict:
    """The reference rows: a constant client (the mean auxiliary image for every pool
    image: the floor of any attacker) and the identity client (a = x) per attacker."""
    mean_image = data.pix_aux.mean(0, keepdim=True).expand_as(data.pix_pool)
    rows = {
        "constant": dict(
            zip(
                ("psnr", "psnr_median", "ssim", "mse"),
                _scores(mean_image, data.pix_pool),
                strict=False,
            )
        )
    }
    rec, _ = ridge_attack(data.x_aux, data.pix_aux, data.x_pool)
    rows["identity_ridge"] = dict(
        zip(("psnr", "psnr_median", "ssim", "mse"), _scores(rec, data.pix_pool), strict=False)
    )
    if conv:
        rec = conv_attack(
            data.x_aux,
            data.pix_aux,
            data.x_pool,
            derive_seed(cfg.privacy.seed, "decoder", "identity"),
            epochs=cfg.privacy.conv_epochs,
        )
        rows["identity_conv"] = dict(
            zip(("psnr", "psnr_median", "ssim", "mse"), _scores(rec, data.pix_pool), strict=False)
        )
    for name, row in rows.items():
        row["dcor"] = 0.0 if name == "constant" else 1.0
    return rows


def _client_entry(row: torch.Tensor, refs: dict) -> dict:
    v = dict(zip(SCALARS, row[: len(SCALARS)].tolist(), strict=False))
    floor = refs["constant"]["psnr"]
    entry = {
        "dcor": v["dcor"],
        "ridge": {
            "psnr": v["ridge_psnr"],
            "psnr_median": v["ridge_psnr_median"],
            "ssim": v["ridge_ssim"],
            "mse": v["ridge_mse"],
            "lambda": v["ridge_lambda"],
            "leakage": leakage_index(v["ridge_psnr"], floor, refs["identity_ridge"]["psnr"]),
            "leakage_ssim": leakage_index(
                v["ridge_ssim"], refs["constant"]["ssim"], refs["identity_ridge"]["ssim"]
            ),
        },
    }
    strongest = entry["ridge"]
    if not math.isnan(v["conv_psnr"]):
        entry["conv"] = {
            "psnr": v["conv_psnr"],
            "psnr_median": v["conv_psnr_median"],
            "ssim": v["conv_ssim"],
            "mse": v["conv_mse"],
            "leakage": leakage_index(v["conv_psnr"], floor, refs["identity_conv"]["psnr"]),
            "leakage_ssim": leakage_index(
                v["conv_ssim"], refs["constant"]["ssim"], refs["identity_conv"]["ssim"]
            ),
        }
        if entry["conv"]["leakage"] > strongest["leakage"]:
            strongest = entry["conv"]
    entry.update(
        leakage=strongest["leakage"],
        leakage_ssim=strongest["leakage_ssim"],
        psnr=strongest["psnr"],
        ssim=strongest["ssim"],
        mse=strongest["mse"],
        attacker="conv" if strongest is entry.get("conv") else "ridge",
    )
    return entry


def summarize(rows: torch.Tensor, refs: dict, method: str, mode: str, eval_s: float) -> dict:
    """All clients' rows (N, W) -> the ``privacy`` block of summary.json."""
    evaluated = [c for c in range(rows.shape[0]) if rows[c, 0] == 1.0]
    per_client = {str(c): _client_entry(rows[c], refs) for c in evaluated}
    keys = ("leakage", "leakage_ssim", "psnr", "ssim", "mse", "dcor")
    mean = {k: statistics.fmean(e[k] for e in per_client.values()) for k in keys}
    for attacker in ("ridge", "conv"):
        got = [e[attacker]["leakage"] for e in per_client.values() if attacker in e]
        if got:
            mean[f"leakage_{attacker}"] = statistics.fmean(got)
    worst_id = max(per_client, key=lambda c: per_client[c]["leakage"])
    worst = {
        "client": int(worst_id),
        **{k: per_client[worst_id][k] for k in keys},
        "dcor_max": max(e["dcor"] for e in per_client.values()),
    }
    flags = exposure(method)
    return {
        "mode": mode,
        "leakage": mean["leakage"],
        "leakage_worst": worst["leakage"],
        "leakage_ssim": mean["leakage_ssim"],
        "psnr": mean["psnr"],
        "ssim": mean["ssim"],
        "dcor": mean["dcor"],
        "threat": flags["threat"],
        "exposure": {k: flags[k] for k in FLAG_KEYS},
        "clients_evaluated": evaluated,
        "mean": mean,
        "worst": worst,
        "reference": refs,
        "clients": per_client,
        "eval_s": eval_s,
    }


def reconstructions(rows: torch.Tensor, data: PrivacyData) -> dict[str, torch.Tensor]:
    """The first `SHOWN` pool images and each evaluated client's reconstructions of them:
    'original' (8, C, H, W), '<client>/ridge' and '<client>/conv' (where computed)."""
    shape, shown = data.pix_pool.shape[1:], SHOWN * math.prod(data.pix_pool.shape[1:])
    out = {"original": data.pix_pool[:SHOWN].clone()}
    for c in range(rows.shape[0]):
        if rows[c, 0] != 1.0:
            continue
        for k, attacker in enumerate(("ridge", "conv")):
            flat = rows[c, len(SCALARS) + k * shown : len(SCALARS) + (k + 1) * shown]
            if not torch.isnan(flat).any():
                out[f"{c}/{attacker}"] = flat.float().view(SHOWN, *shape)
    return out


def evaluate_run(state, transport, one_model: bool) -> tuple[dict, dict] | None:
    """Every rank: evaluate the chosen hosted clients and all-gather their rows; the server
    returns (the summary block, the reconstructions), other ranks None."""
    cfg, start = state.cfg, time.perf_counter()
    p, layout = cfg.privacy, state.layout
    dataset = state.data.dataset
    n_test = dataset.test_x.shape[0]
    data = privacy_data(dataset.test_x, p.aux_size, p.pool_size, dataset.prepare)
    if data.x_aux.shape[0] < 20 or data.x_pool.shape[0] < 8:
        raise ValueError(f"privacy needs at least 28 test images, the test set has {n_test}")
    ridge_ids, conv_ids = chosen_clients(p.mode, state.data.client_sizes, one_model, p.all_clients)
    rows = torch.full(
        (len(layout.hosted), row_width(data.pix_pool.shape[1:])), math.nan, dtype=torch.float64
    )
    mine = [c for c in layout.hosted if c in ridge_ids]
    if mine:
        ux_pool = u_centred_distances(data.x_pool)  # shared by every client here
        virtual_cut = exposure(cfg.algorithm.name)["virtual_cut"]
        for c in mine:
            slot = layout.hosted.index(c)
            segment = state.clients.segment(slot)
            if virtual_cut:  # the client holds the whole model: its first blocks
                segment = segment[: cfg.model.cut_layer]
            rows[slot] = evaluate_client(segment, data, ux_pool, cfg, c, conv=c in conv_ids)
    # The server computes the reference rows while the client ranks evaluate.
    refs = references(data, cfg, conv=bool(conv_ids)) if layout.is_server else None
    gathered = transport.all_gather_rows(rows.to(transport.device)).cpu()  # (N, W)
    if not layout.is_server:
        return None
    summary = summarize(gathered, refs, cfg.algorithm.name, p.mode, time.perf_counter() - start)
    return summary, reconstructions(gathered, data)
