"""The device scoring path (metadt.train.device_scoring) under Triton's interpreter.

Like tests/kernels_interpret_cases.py these need ``TRITON_INTERPRET=1`` and
``METADT_KERNELS=triton`` from process start (they skip otherwise); they are run
in such a subprocess by ``tests/test_device_scoring.py``. With those set,
``device_scoring.on_device`` is true for a CPU world model, so the few-shot
selection and the training error column take the device path (errors and contexts
built in torch on the model's device, the Triton ``best_segments`` kernel);
flipping ``METADT_KERNELS=torch`` at run time gives the host path (NumPy contexts,
the Rust scorer) on the same model and data, to compare against.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

import metadt.kernels as K  # noqa: E402
from kernels_reference import rust_best_segments  # noqa: E402

pytestmark = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get(K.ENV_VAR) != "triton",
    reason="needs TRITON_INTERPRET=1 and METADT_KERNELS=triton from process start "
           "(launched by tests/test_device_scoring.py)",
)


@pytest.fixture
def host_path(monkeypatch):
    """Call ``host_path()`` inside a ``with`` to run that block on the host path."""
    from contextlib import contextmanager

    @contextmanager
    def host():
        monkeypatch.setenv(K.ENV_VAR, "torch")
        try:
            yield
        finally:
            monkeypatch.setenv(K.ENV_VAR, "triton")
    return host


def _world_model(obs_dim, act_dim, seed=0, **kw):
    from metadt.config.world_model import WorldModelConfig
    from metadt.models import WorldModel

    torch.manual_seed(seed)
    cfg = WorldModelConfig(context_len=3, gru_hidden=8, decoder_hidden=8, z_dim=4,
                           input_embed_dim=4, **kw)
    return WorldModel(obs_dim, act_dim, cfg).eval()


def _trajectories(n, t, obs_dim, act_dim, tasks, seed=0):
    from metadt.evaluate.rollout import Trajectories

    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, t, obs_dim)).astype(np.float32)
    return Trajectories(tasks=np.asarray(tasks), obs=obs,
                        actions=rng.standard_normal((n, t, act_dim)).astype(np.float32),
                        rewards=rng.standard_normal((n, t)).astype(np.float32),
                        next_obs=obs + 0.1 * rng.standard_normal(obs.shape).astype(np.float32),
                        targets=np.zeros(n))


def _store(tr):
    from metadt import TrajectoryStore

    s = TrajectoryStore(tr.obs.shape[2], tr.actions.shape[2])
    for i in range(tr.num):
        s.add_episode(tr.obs[i], tr.actions[i], tr.rewards[i], next_obs=tr.next_obs[i],
                      task=int(tr.tasks[i]))
    return s


def test_world_model_on_cpu_takes_the_device_path_here():
    from metadt.train import device_scoring

    assert device_scoring.on_device(_world_model(2, 2))
    assert not device_scoring.on_device(None)


@pytest.mark.parametrize("both", [True, False])
def test_device_error_column_equals_the_host_column(both, host_path):
    from metadt.train.columns import StepTable, compute_step_errors

    tr = _trajectories(5, 11, 3, 2, [0, 1, 0, 2, 1], seed=3)
    wm = _world_model(3, 2, use_transition_decoder=both)
    table = StepTable.of(_store(tr))
    dev = compute_step_errors(table, wm, batch_size=7)
    idx = np.array([0, 4, 11, 30, 54])
    dev_idx = compute_step_errors(table, wm, batch_size=2, idx=idx)
    with host_path():
        host = compute_step_errors(table, wm, batch_size=7)
    assert dev.shape == host.shape == (55,) and dev.dtype == np.float32
    np.testing.assert_allclose(dev, host, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dev_idx, host[idx], rtol=1e-6, atol=1e-6)


def test_episode_errors_equal_the_store_pass():
    from metadt.train import device_scoring
    from metadt.train.columns import StepTable, compute_step_errors

    tr = _trajectories(4, 9, 2, 2, [0, 1, 2, 3], seed=5)
    wm = _world_model(2, 2, use_transition_decoder=True)
    err = device_scoring.episode_errors(wm, tr.obs, tr.actions, tr.rewards, tr.next_obs,
                                        rows_per_pass=3)
    host = compute_step_errors(StepTable.of(_store(tr)), wm)
    np.testing.assert_allclose(err.numpy().reshape(-1), host, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("per", ["episode", "task"])
def test_device_choice_equals_the_rust_scorer_on_the_device_errors(per):
    from metadt.train import device_scoring

    tasks = [4, 1, 4, 4, 0, 1, 7]
    tr = _trajectories(7, 15, 2, 2, tasks, seed=8)
    wm = _world_model(2, 2)
    groups = None if per == "episode" else np.asarray(tasks)
    segs = device_scoring.best_segments(wm, tr.obs, tr.actions, tr.rewards, tr.next_obs,
                                        length=4, start_min=3, groups=groups)
    err = device_scoring.episode_errors(wm, tr.obs, tr.actions, tr.rewards, tr.next_obs)
    want = rust_best_segments(err.numpy(), np.full(7, 15), 4, 3, groups)
    assert segs["keys"].tolist() == sorted(want)
    for key, ep, start, score in zip(segs["keys"], segs["episodes"], segs["starts"],
                                     segs["scores"]):
        assert (int(ep), int(start), float(score)) == want[int(key)]


@pytest.mark.parametrize("length,start_min", [(3, 3), (4, 0), (12, 3)])
def test_few_shot_selection_on_device_equals_the_host_path(length, start_min, host_path):
    from metadt.evaluate.few_shot import select_starts

    tr = _trajectories(6, 12, 2, 2, [2, 0, 2, 1, 0, 1], seed=11)
    wm = _world_model(2, 2, use_transition_decoder=True)
    rows = tr.best_per_task()
    kw = dict(prompt_len=length, prompt_start_min=start_min, strategy="argmax", world_model=wm)
    dev = select_starts(tr, rows, rng=np.random.default_rng(0), **kw)
    with host_path():
        host = select_starts(tr, rows, rng=np.random.default_rng(0), **kw)
    assert dev == host and sorted(dev) == [0, 1, 2]


def test_bf16_policy_through_the_triton_attention_matches_float32(host_path):
    """The paper preset's amp on a device: bf16 autocast, attention in the Triton kernel
    (bf16 q, k, v; float32 accumulation), against the float32 model on PyTorch's path."""
    sys.path.insert(0, str(Path(__file__).parent))
    import test_precision as P

    z = torch.randn(P.B, P.K, 16, generator=torch.Generator().manual_seed(1))
    calls = []
    import metadt.models.transformer as T

    real = T._kernel_attention

    def spy(q, *a, **kw):
        calls.append((q.dtype, K.backend(q)))
        return real(q, *a, **kw)

    T._kernel_attention = spy
    try:
        amp = P._policy("bf16")
        l1 = amp.loss(P._batch(), z)
        g1 = torch.autograd.grad(l1, list(amp.parameters()))
        with host_path():
            ref = P._policy("off")
            l0 = ref.loss(P._batch(), z)
            g0 = torch.autograd.grad(l0, list(ref.parameters()))
    finally:
        T._kernel_attention = real
    assert calls[0] == (torch.bfloat16, "triton") and calls[-1] == (torch.float32, "torch")
    l0, l1 = l0.detach(), l1.detach()
    assert abs(float(l1) - float(l0)) <= 2e-2 * abs(float(l0))
    for a, b in zip(g1, g0):
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert float((a - b).abs().max()) <= 5e-2 * float(b.abs().max()) + 1e-6
