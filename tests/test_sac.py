"""The batched SAC ensemble: equal to per-task SAC, shapes, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metadt.collect.sac import PolicyParams, SACEnsemble
from metadt.config.collect import SACConfig

LOW, HIGH = [-0.1, -0.1], [0.1, 0.1]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: one torch thread is faster, and much faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _batch(n: int, b: int, od: int, ad: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "obs": torch.randn(n, b, od, generator=gen),
        "actions": torch.rand(n, b, ad, generator=gen) * 0.2 - 0.1,
        "rewards": -torch.rand(n, b, generator=gen),
        "next_obs": torch.randn(n, b, od, generator=gen),
        "terminals": (torch.rand(n, b, generator=gen) < 0.1).float(),
    }


def _ensemble(n: int, seed: int = 0, **kw) -> SACEnsemble:
    cfg = SACConfig(hidden_dim=16, batch_size=8, **kw)
    return SACEnsemble(n, 2, 2, LOW, HIGH, cfg, device="cpu", seed=seed)


def test_batched_equals_per_task_sac():
    """N=3 ensemble vs three N=1 agents with the same weights, batches and noise."""
    torch.manual_seed(0)
    ens = _ensemble(3)
    singles = [ens.select([i]) for i in range(3)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        batch = _batch(3, 8, 2, 2, gen)
        nn_ = torch.randn(3, 8, 2, generator=gen)
        npi = torch.randn(3, 8, 2, generator=gen)
        out = ens.update(batch, noise_next=nn_, noise_pi=npi)
        for i, agent in enumerate(singles):
            one = {k: v[i:i + 1] for k, v in batch.items()}
            ref = agent.update(one, noise_next=nn_[i:i + 1], noise_pi=npi[i:i + 1])
            for key in ("q1_loss", "q2_loss", "policy_loss", "entropy"):
                torch.testing.assert_close(out[key][i:i + 1], ref[key], rtol=1e-5, atol=1e-6)
    for i, agent in enumerate(singles):
        for p, q in zip(ens.policy.params, agent.policy.params):
            torch.testing.assert_close(p.detach()[i:i + 1], q.detach(), rtol=1e-5, atol=1e-6)
        for p, q in zip(ens.critic_target, agent.critic_target):
            torch.testing.assert_close(p[2 * i:2 * i + 2], q, rtol=1e-5, atol=1e-6)


def test_agents_are_independent():
    """Changing agent 1's batch leaves agent 0's update untouched."""
    a, b = _ensemble(2), _ensemble(2)
    gen = torch.Generator().manual_seed(3)
    batch = _batch(2, 8, 2, 2, gen)
    other = {k: v.clone() for k, v in batch.items()}
    other["rewards"][1] += 5.0
    noise = torch.randn(2, 8, 2, generator=gen)
    oa = a.update(batch, noise, noise)
    ob = b.update(other, noise, noise)
    torch.testing.assert_close(oa["q1_loss"][0], ob["q1_loss"][0])
    assert not torch.allclose(oa["q1_loss"][1], ob["q1_loss"][1])
    for p, q in zip(a.policy.params, b.policy.params):
        torch.testing.assert_close(p.detach()[0], q.detach()[0])


def test_actions_within_bounds_and_shapes():
    ens = _ensemble(4)
    obs = torch.randn(4, 2) * 10
    act = ens.act(obs)
    assert act.shape == (4, 2)
    assert float(act.abs().max()) <= 0.1 + 1e-7
    act3 = ens.act(torch.randn(4, 5, 2), deterministic=True)
    assert act3.shape == (4, 5, 2)
    gen1 = torch.Generator().manual_seed(5)
    gen2 = torch.Generator().manual_seed(5)
    torch.testing.assert_close(ens.act(obs, generator=gen1), ens.act(obs, generator=gen2))


def test_learns_a_bandit():
    """Each agent finds its own best action of a 1-step bandit (reward -|a - target_i|^2)."""
    cfg = SACConfig(hidden_dim=32, batch_size=64, alpha=0.001, lr=3e-3, gamma=0.0)
    targets = torch.tensor([[-0.05, 0.05], [0.06, -0.03]])
    ens = SACEnsemble(2, 2, 2, LOW, HIGH, cfg, device="cpu", seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        obs = torch.zeros(2, 64, 2)
        actions = torch.rand(2, 64, 2, generator=gen) * 0.2 - 0.1
        rewards = -(actions - targets[:, None, :]).pow(2).sum(-1) * 100
        ens.update({"obs": obs, "actions": actions, "rewards": rewards, "next_obs": obs,
                    "terminals": torch.ones(2, 64)}, generator=gen)
    # the mean action (not tanh of the mean: squashing biases that outward)
    got = ens.act(torch.zeros(2, 2000, 2), generator=gen).mean(1)
    assert torch.allclose(got, targets, atol=0.015), got


def test_state_dict_round_trip_and_checkpoint_gather():
    ens = _ensemble(3, seed=7)
    gen = torch.Generator().manual_seed(0)
    ens.update(_batch(3, 8, 2, 2, gen), generator=gen)
    copy = _ensemble(3, seed=99)
    copy.load_state_dict(ens.state_dict())
    batch = _batch(3, 8, 2, 2, gen)
    noise = torch.randn(3, 8, 2, generator=gen)
    a = ens.update(batch, noise, noise)
    b = copy.update(batch, noise, noise)
    for k in a:
        torch.testing.assert_close(a[k], b[k])

    snap = PolicyParams.from_state_dict(ens.policy_snapshot().state_dict())
    other = PolicyParams.from_state_dict(copy.policy_snapshot().state_dict())
    mixed = PolicyParams.gather([snap, other, snap], [0, 1, 2])
    for p, q, r in zip(mixed.params, snap.params, other.params):
        torch.testing.assert_close(p[0], q[0])
        torch.testing.assert_close(p[1], r[1])
    with pytest.raises(ValueError):
        _ensemble(2).load_state_dict(ens.state_dict())


def test_log_prob_matches_torch_distributions():
    ens = _ensemble(2)
    obs = torch.randn(2, 6, 2)
    noise = torch.randn(2, 6, 2)
    action, logp, _ = ens.policy.sample(obs, noise)
    mean, log_std = ens.policy.distribution(obs)
    u = mean + log_std.exp() * noise
    base = torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
    scale = 0.1
    ref = (base - torch.log(scale * (1 - torch.tanh(u) ** 2) + 1e-6)).sum(-1)
    torch.testing.assert_close(logp, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(action.detach().numpy(), (torch.tanh(u) * scale).detach().numpy(),
                               rtol=1e-6, atol=1e-7)
