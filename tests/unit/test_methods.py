"""Unit tests (milliseconds to a second): one step of a method on tiny models, in
process, through the method protocol exactly as the runtime calls it.

Checks update rules that are about who receives what (LocFedMix's mixup changes the
server's update but not the gradients the clients receive), EPSL's exactness at phi=0
and its byte counts by hand, and that every registered method is reachable and only
through the registry.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import subprocess
from pathlib import Path

import pytest
import torch

from lightning_gapsl.federated import build_federated_data
from lightning_gapsl.layout import Layout
from lightning_gapsl.methods import get_method, method_names
from lightning_gapsl.methods.base import make_optimizers, own_modules
from lightning_gapsl.models.stacked import StackedSegments
from lightning_gapsl.schedule import StepSchedule
from lightning_gapsl.methods.epsl import aggregate_positions, aggregated_positions
from lightning_gapsl.transport import LocalTransport

N, B = 3, 4


def _state(compose_cfg, *overrides):
    cfg = compose_cfg(
        *overrides,
        f"data.num_clients={N}",
        f"data.batch_size={B}",
        "trainer.devices=1",
        "optim.momentum=0",
    )
    data = build_federated_data(cfg)
    method = get_method(cfg.algorithm.name)
    state = method.build(cfg, data, Layout(0, 1, N))
    make_optimizers(method, state, torch.device("cpu"))
    return method, state


def _batch():
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N, B, 1, 8, 8, generator=gen), torch.randint(0, 10, (N, B), generator=gen)


def _schedule(method, state, step: int) -> None:
    """What the runtime does before a step: its schedule, from the runtime's scheduler."""
    state.schedule = StepSchedule(method, state).at(step, torch.device("cpu"))


def _step(method, state, step: int = 0):
    transport = LocalTransport(Layout(0, 1, N))
    _schedule(method, state, step)
    x, y = _batch()
    method.train_step(state, transport, step, x, y)
    return transport


def _with(method, state, **changes):
    """A deep copy of ``state`` whose method config has ``changes``."""
    other = copy.deepcopy(state)
    algo = dataclasses.replace(state.cfg.algorithm, **changes)
    other.cfg = dataclasses.replace(state.cfg, algorithm=algo)
    return other


def _same(a, b) -> bool:
    return _same_params(a.parameters(), b.parameters())


def _same_params(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=False))


def test_locfedmix_mixup_moves_server_not_client_gradients(compose_cfg):
    method, a = _state(compose_cfg, "algorithm=locfedmix", "algorithm.num_partners=1")
    b = _with(method, a, num_partners=0)
    _step(method, a), _step(method, b)
    assert _same(a.clients, b.clients)  # same cut-layer gradients received ...
    assert not _same(a.server, b.server)  # ... while the server's update had the mixup loss


def test_locfedmix_reconstruction_changes_only_the_client_side(compose_cfg):
    method, a = _state(
        compose_cfg, "algorithm=locfedmix", "algorithm.num_partners=0", "algorithm.rec_weight=1.0"
    )
    b = _with(method, a, rec_weight=0.0)
    _step(method, a), _step(method, b)
    assert _same(a.server, b.server)
    assert not _same(a.clients, b.clients)


def test_epsl_phi_zero_is_psl_bit_for_bit(compose_cfg):
    psl, a = _state(compose_cfg, "algorithm=psl")
    epsl, b = _state(compose_cfg, "algorithm=epsl", "algorithm.phi=0")
    for step in range(3):
        ta, tb = _step(psl, a, step), _step(epsl, b, step)
        assert (ta.counter.bytes_up, ta.counter.bytes_down) == (
            tb.counter.bytes_up,
            tb.counter.bytes_down,
        )
    assert _same(a.clients, b.clients) and _same(a.server, b.server)


def test_epsl_bytes_by_hand(compose_cfg):
    """phi=0.5, B=4: m=2 positions aggregated. Up: N*B activations (8x4x4 floats) + N*B
    int64 labels. Down: N*(B-m) per-client rows + m broadcast rows, counted once."""
    epsl, state = _state(compose_cfg, "algorithm=epsl", "algorithm.phi=0.5")
    transport = _step(epsl, state)
    row = 8 * 4 * 4 * 4  # bytes of one sample's cut-layer tensor (float32)
    assert transport.counter.bytes_up == N * B * row + N * B * 8
    assert transport.counter.bytes_down == N * (B - 2) * row + 2 * row


def test_epsl_aggregation_by_hand():
    g = torch.tensor([[[1.0], [2.0], [3.0]], [[3.0], [4.0], [5.0]]])  # (N=2, B=3, 1)
    assert aggregated_positions(0.5, 3) == 2 and aggregated_positions(0.0, 3) == 0
    assert aggregated_positions(0.1 * 3, 10) == 3  # 0.30000000000000004 * 10: no extra
    shared, own = aggregate_positions(g, 2)
    assert torch.equal(shared, torch.tensor([[2.0], [3.0]]))  # client means of slots 0, 1
    assert torch.equal(own, torch.tensor([[[3.0]], [[5.0]]]))
    # Partial participation: client 1 idle (its rows zero), the mean is client 0's alone.
    idle = torch.tensor([[[1.0], [2.0], [3.0]], [[0.0], [0.0], [0.0]]])
    shared, _ = aggregate_positions(idle, 2, active=torch.tensor([True, False]))
    assert torch.equal(shared, torch.tensor([[1.0], [2.0]]))


def test_epsl_clients_receive_the_aggregated_positions(compose_cfg):
    """phi=1: every position aggregated, so every client gets the same gradient rows."""
    epsl, state = _state(compose_cfg, "algorithm=epsl", "algorithm.phi=1")
    grads = {}
    x, y = _batch()
    original = state.clients.forward

    def recording_forward(inp):
        out = original(inp)
        out.register_hook(lambda g: grads.setdefault("g", g))
        return out

    state.clients.forward = recording_forward
    epsl.train_step(state, LocalTransport(Layout(0, 1, N)), 0, x, y)
    g = grads["g"]  # (N, B, *F)
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_every_method_is_registered_and_names_stay_in_the_registry():
    root = Path(__file__).resolve().parents[2]
    methods_dir = root / "lightning_gapsl" / "methods"
    for name in method_names():
        assert get_method(name).name == name
        assert (root / "conf" / "algorithm" / f"{name}.yaml").is_file()
        assert (methods_dir / f"{name}.py").is_file() or (
            methods_dir / name / "__init__.py"
        ).is_file()
    # No algorithm-name comparison outside the registry, the config entry and the methods.
    names = "|".join(method_names())
    pattern = rf"""(algorithm|algo)\.name *(==|!=|in)|(==|!=) *["']({names})["']"""
    found = subprocess.run(
        ["grep", "-rnE", pattern, "lightning_gapsl", "callbacks"],
        check=False,
        cwd=root,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    outside = [
        line
        for line in found
        if "lightning_gapsl/methods/" not in line and "lightning_gapsl/config.py" not in line
    ]
    assert outside == []


def test_unknown_algorithm_names_the_valid_ones():
    with pytest.raises(KeyError, match="gapsl"):
        get_method("gapls")


SPLIT_METHODS = (
    "psl",
    "gapsl",
    "epsl",
    "sglr",
    "sfl_v1",
    "sfl_v2",
    "locfedmix",
    "cse_fsl",
    "fsl_sage",
)


def _slices_equal(stacked) -> bool:
    return all(
        torch.equal(p[0], p[k])
        for p in stacked.stacked_params().values()
        for k in range(p.shape[0])
    )


@pytest.mark.parametrize("name", SPLIT_METHODS)
def test_shared_init_every_client_starts_equal_in_any_layout(compose_cfg, name):
    """model.client_init=shared: every client segment, auxiliary model and decoder is a
    copy of one model, in one process and on both client ranks of a 3-process layout."""
    cfg = compose_cfg(f"algorithm={name}", "data.num_clients=5", "trainer.devices=1")
    data = build_federated_data(cfg)
    method = get_method(name)
    one = method.build(cfg, data, Layout(0, 1, 5))
    ranks = [method.build(cfg, data, Layout(r, 3, 5)) for r in (1, 2)]
    for state in (one, *ranks):
        assert _slices_equal(state.clients)
        for extra in own_modules(state.own).values():
            if isinstance(extra, StackedSegments):
                assert _slices_equal(extra)
    reference = one.clients.segment_state(0)
    for state in ranks:
        assert all(torch.equal(v, state.clients.segment_state(0)[k]) for k, v in reference.items())


def test_independent_init_keeps_clients_apart(compose_cfg):
    cfg = compose_cfg(
        "algorithm=psl", "model.client_init=independent", "data.num_clients=3", "trainer.devices=1"
    )
    state = get_method("psl").build(cfg, build_federated_data(cfg), Layout(0, 1, 3))
    assert not _slices_equal(state.clients)


@pytest.mark.parametrize(
    ("name", "mode", "expected"),
    [
        ("cse_fsl", "per_client", N),
        ("cse_fsl", "averaged", 1),
        ("fsl_sage", "per_client", N),
        ("fsl_sage", "averaged", 1),
    ],
)
def test_upload_step_makes_one_server_step_per_client(compose_cfg, name, mode, expected):
    fast = ["algorithm.align_epochs=1"] if name == "fsl_sage" else []
    method, state = _state(
        compose_cfg,
        f"algorithm={name}",
        f"algorithm.server_steps={mode}",
        "algorithm.server_interval=5",
        *fast,
    )
    steps = []
    state.server_opt.register_step_post_hook(lambda opt, args, kwargs: steps.append(1))
    _step(method, state, step=0)  # step 0 uploads (every q-th step, step 0 included)
    assert len(steps) == expected
    _step(method, state, step=1)  # q = 5: no upload, no server step
    assert len(steps) == expected


def test_fsl_sage_aligns_before_the_first_client_update_of_round_zero(compose_cfg):
    """align_when=start: in step 0 the estimators are fitted on the first uploads and
    sent down before the clients update, so the clients' first step already uses them."""
    method, start = _state(compose_cfg, "algorithm=fsl_sage", "algorithm.align_epochs=3")
    end = _with(method, start, align_when="end")
    before = copy.deepcopy(start.own.estimators)
    _step(method, start), _step(method, end)
    fitted = start.own.server_estimators
    estimators = start.own.estimators
    assert not _same(estimators, before)  # fitted in round 0 ...
    for k in range(N):  # ... and each client holds its server-side fit
        assert all(
            torch.equal(estimators.stacked_params()[n][k], p)
            for n, p in fitted[k].named_parameters()
        )
    assert _same(end.own.estimators, before)  # 'end': not yet
    assert not _same(start.clients, end.clients)  # the first client update used the fit


def test_local_pass_round_gives_each_client_ceil_n_over_b_active_steps(compose_cfg):
    """algorithm.rounds=local_pass (the default of the averaging methods): over one round
    client i's model moves in exactly ceil(n_i / B) steps; idle steps leave it (and its
    momentum) untouched, and only active clients' rows are counted as traffic."""
    from lightning_gapsl.data.rounds import active_clients, local_steps

    method, state = _state(
        compose_cfg,
        "algorithm=sfl_v1",
        "data.partition=dirichlet",
        "data.alpha=0.5",
        "optim.momentum=0.9",
        "data.max_train=60",
    )
    sizes, b = state.data.client_sizes, state.data.batch_size
    expected = local_steps(sizes.long(), b)  # (N,)
    assert state.round_len == state.data.steps_per_epoch == int(expected.max())
    moved = torch.zeros(N, dtype=torch.int64)
    transport = LocalTransport(Layout(0, 1, N))
    row = 8 * 4 * 4 * 4 + 8  # one sample's activations (float32) + its label (int64)
    for t in range(state.round_len):
        _schedule(method, state, t)
        assert torch.equal(state.active, active_clients(t, sizes.long(), b))
        before = [p.detach().clone() for p in state.clients.stacked_params().values()]
        up0 = transport.counter.bytes_up
        x, y = _batch()
        method.train_step(state, transport, t, x, y)
        assert transport.counter.bytes_up - up0 == int(state.active.sum()) * B * row
        after = list(state.clients.stacked_params().values())
        moved += torch.tensor(
            [
                any(not torch.equal(p0[k], p1[k]) for p0, p1 in zip(before, after, strict=False))
                for k in range(N)
            ]
        )
    assert torch.equal(moved, expected), (moved, expected, sizes)


@pytest.mark.parametrize("name", ["sfl_v2", "sl"])
def test_epoch_turns_give_each_client_one_pass_in_one_turn(compose_cfg, name):
    """algorithm.turns=epoch (SplitFed's code, the default of SL and SplitFed V2): an epoch
    is one round of sum_i ceil(n_i / B) steps; each step only the turn's client computes
    and sends (B rows up), the server steps once; each client's turn is ceil(n_i / B)
    consecutive steps and every client has exactly one turn per round."""
    from lightning_gapsl.data.rounds import local_steps

    method, state = _state(
        compose_cfg,
        f"algorithm={name}",
        "data.partition=dirichlet",
        "data.alpha=0.5",
        "optim.momentum=0.9",
        "data.max_train=60",
    )
    sizes, b = state.data.client_sizes.long(), state.data.batch_size
    expected = local_steps(sizes, b)  # (N,)
    assert state.round_len is None
    assert state.turns.length == state.data.steps_per_epoch == int(expected.sum())
    transport = LocalTransport(Layout(0, 1, N))
    row = 8 * 4 * 4 * 4 + 8  # one sample's activations (float32) + its label (int64)
    segment_bytes = 4 * sum(p.numel() for p in state.clients.parameters())
    turns, server_steps = [], []
    for t in range(state.turns.length):
        _schedule(method, state, t)
        assert torch.equal(state.active, state.turns.active(t))
        client = state.turns.at(t)[1]
        handoff = name == "sl" and t > 0 and turns[-1] != client
        server_before = [p.detach().clone() for p in state.server.parameters()]
        up0 = transport.counter.bytes_up
        x, y = _batch()
        method.train_step(state, transport, t, x, y)
        assert transport.counter.bytes_up - up0 == B * row + handoff * segment_bytes
        server_steps.append(not _same_params(server_before, state.server.parameters()))
        turns.append(client)
    assert all(server_steps)
    counts = torch.bincount(torch.tensor(turns), minlength=N)
    assert torch.equal(counts, expected), (counts, expected)
    changes = sum(a != b for a, b in itertools.pairwise(turns))
    assert changes == N - 1  # one turn per client: the schedule never comes back


def test_sfl_v2_epoch_turns_move_only_the_turns_client(compose_cfg):
    """SplitFed V2 with whole-epoch turns: a step changes the turn's client segment and
    no other (momentum steps of idle clients are masked)."""
    method, state = _state(compose_cfg, "algorithm=sfl_v2", "optim.momentum=0.9")
    transport = LocalTransport(Layout(0, 1, N))
    for t in range(3):
        _schedule(method, state, t)
        assert torch.equal(state.active, state.turns.active(t))
        client = state.turns.at(t)[1]
        before = [p.detach().clone() for p in state.clients.stacked_params().values()]
        x, y = _batch()
        method.train_step(state, transport, t, x, y)
        after = list(state.clients.stacked_params().values())
        moved = [
            any(not torch.equal(p0[k], p1[k]) for p0, p1 in zip(before, after, strict=False))
            for k in range(N)
        ]
        assert moved == [k == client for k in range(N)], (t, client, moved)


@pytest.mark.parametrize("model", ["lenet", "resnet18"])
def test_fsl_sage_next_stage_auxiliary_model(compose_cfg, model):
    """algorithm.aux_model=next_stage: every client's estimator is a freshly initialised
    copy of the server's next block (same shapes, other values) + pool + linear, equal
    for every client and for the server's copies; a training step runs through it."""
    cut = 3 if model == "resnet18" else 1
    method, state = _state(
        compose_cfg,
        "algorithm=fsl_sage",
        f"model={model}",
        f"model.cut_layer={cut}",
        "algorithm.aux_model=next_stage",
        "algorithm.rounds=lockstep",
        "algorithm.align_epochs=2",
    )
    estimators = state.own.estimators
    first = estimators.segment(0)
    block, server_block = first[0], state.server[0]
    shapes = [p.shape for p in block.parameters()]
    assert shapes == [p.shape for p in server_block.parameters()]
    assert not _same(block, server_block)  # its own initialisation, as the reference
    assert all(_same(first, estimators.segment(k)) for k in range(1, N))
    assert all(_same(first, copy_) for copy_ in state.own.server_estimators)
    _step(method, state)
    assert not _same(first, state.own.server_estimators[0])  # aligned at step 0


def test_step_latency_counts_only_the_active_clients(compose_cfg):
    """An idle client (local-pass rounds, turns) neither computes nor sends: a step where
    one client works is the parallel model on that client alone, its bytes all its own,
    with the server serving one client's batch."""
    from lightning_gapsl.latency import client_devices, forward_flops, parallel_step_latency
    from lightning_gapsl.methods.base import model_args, step_latency_model, with_defaults
    from lightning_gapsl.models.split import build_client_segment, build_server_segment

    method, state = _state(compose_cfg, "algorithm=psl", "latency.client_hetero=1.0")
    method = with_defaults(method)
    latency = step_latency_model(method, state)
    cfg = state.cfg
    name, shape, classes, cut = model_args(cfg, state.data)
    client = build_client_segment(name, shape, classes, cut, cfg.seed, 0)
    server = build_server_segment(name, shape, classes, cut, cfg.seed)
    cost = method.cost(
        state,
        forward_flops(client, shape),
        forward_flops(server, client(torch.zeros(1, *shape)).shape[1:]),
    )
    devices = client_devices(cfg.latency, N, cfg.seed)  # (N,) each
    slowest = int(devices.flops.argmin())
    one = torch.zeros(N, dtype=torch.bool)
    one[slowest] = True
    assert latency(3000, 300, torch.ones(N, dtype=torch.bool)) == latency(3000, 300)
    expected = parallel_step_latency(
        cfg.latency, devices.of(one), cost.client, cost.server / N, 1000, 100
    )
    assert latency(1000, 100, one) == pytest.approx(expected, rel=1e-12)
    # Everyone active with the same per-client bytes: the same slowest client, N batches
    # on the server.
    assert latency(3000, 300) == pytest.approx(
        expected + (N - 1) * cost.server / N / cfg.latency.server_flops, rel=1e-9
    )


@pytest.mark.parametrize("name", ["gapsl", "fsl_sage"])
def test_checkpointed_method_state_follows_the_modules_device(compose_cfg, name):
    """A checkpoint loads to another device than the run's (CPU vs a GPU run); the restored
    method state must land where the modules are, or the next step mixes devices. Without
    a second real device here, the run's device is the meta device: the checkpoint's CPU
    tensors must all arrive there."""
    from lightning_gapsl.methods.base import load_method_state

    extra = ["algorithm.rounds=lockstep", "algorithm.round_steps=1"] if name == "fsl_sage" else []
    method, state = _state(compose_cfg, f"algorithm={name}", *extra)
    _step(method, state, 0)
    saved = method.state_dict(state)  # what the checkpoint holds, loaded to the CPU
    # An optimizer's state follows its parameters in torch's own load_state_dict, which
    # cannot copy out of the meta device: leave FSL-SAGE's alignment optimizers out.
    saved.pop("align_optimizers", None)
    assert list(_tensors(saved)) and all(t.device.type == "cpu" for t in _tensors(saved))
    load_method_state(method, state, saved, torch.device("meta"))
    restored = list(
        _tensors({k: v for k, v in method.state_dict(state).items() if k != "align_optimizers"})
    )
    assert restored and all(t.device.type == "meta" for t in restored)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


@pytest.mark.parametrize("client_grad", ["own", "server"])
def test_server_pass_on_participants_only_equals_the_pass_over_every_row(compose_cfg, client_grad):
    """With partial participation the server runs only the participants' rows (a step
    costs what its participants cost); the result is the pass over all N rows, where the
    idle rows weigh 0: same loss, cut gradients, per-client losses and server update."""
    from lightning_gapsl.methods.exchange import batched_server_pass

    method, a = _state(compose_cfg, "algorithm=psl", "participation.fraction=0.67")
    a = _with(method, a, client_grad=client_grad)
    _schedule(method, a, 0)
    assert int(a.active.sum()) == 2  # one of the three clients idle
    b = copy.deepcopy(a)
    x, y = _batch()
    acts = a.clients(x).detach()  # (N, B, *F)
    acts[~a.active.to(torch.bool)] = 0.0  # idle rows as the transport delivers them
    rows_seen = []
    a.server.register_forward_pre_hook(lambda mod, inp: rows_seen.append(inp[0].shape[0]))
    loss_a, per_a, grads_a = batched_server_pass(a, acts, y, 0)
    assert rows_seen == [2 * B]  # the participants' samples, not N * B
    full = batched_server_pass(b, acts, y, 0, extra_loss=lambda *args: None)  # every row
    idle = ~a.active.to(torch.bool)
    assert torch.allclose(loss_a, full[0], rtol=1e-6)
    assert torch.allclose(per_a[~idle], full[1][~idle], rtol=1e-6) and per_a[idle].eq(0).all()
    assert torch.allclose(grads_a, full[2], rtol=1e-5, atol=1e-9) and grads_a[idle].eq(0).all()
    for p, q in zip(a.server.parameters(), b.server.parameters(), strict=True):
        assert torch.allclose(p, q, rtol=1e-6, atol=1e-9)
