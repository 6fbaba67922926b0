"""Models: shapes, padding never leaks into predictions, causal masking, z contexts."""
from __future__ import annotations

import pytest
import torch

from metadt.config.meta_dt import METHODS, MetaDTConfig
from metadt.config.world_model import WorldModelConfig
from metadt.models import MetaDT, WorldModel
from metadt.models.meta_dt import context_windows

OBS, ACT, H, K, KP, B = 3, 2, 4, 6, 3, 5


def _wm(**kw) -> WorldModel:
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        use_transition_decoder=True, **kw)
    torch.manual_seed(0)
    return WorldModel(OBS, ACT, cfg).eval()


def _policy(method="meta-dt", **kw) -> MetaDT:
    cfg = MetaDTConfig.for_family("point-robot", "smoke", method).replace(
        window_len=K, prompt_len=KP, max_timestep=50, n_layers=2, n_heads=2, **kw)
    torch.manual_seed(0)
    return MetaDT(OBS, ACT, cfg).eval()


def _batch(pad: int = 0, prompt_pad: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[:, :pad] = False
    cmask = torch.ones(B, K + H, dtype=torch.bool)
    cmask[:, :pad + H] = False
    pmask = torch.ones(B, KP, dtype=torch.bool)
    pmask[:, :prompt_pad] = False
    return dict(
        obs=r(B, K, OBS), actions=r(B, K, ACT).clamp(-1, 1), rewards=r(B, K), rtg=r(B, K),
        timesteps=torch.arange(K).repeat(B, 1), mask=mask,
        ctx_obs=r(B, K + H, OBS), ctx_actions=r(B, K + H, ACT), ctx_rewards=r(B, K + H),
        ctx_mask=cmask,
        prompt_obs=r(B, KP, OBS), prompt_actions=r(B, KP, ACT), prompt_rewards=r(B, KP),
        prompt_rtg=r(B, KP), prompt_timesteps=torch.arange(KP).repeat(B, 1), prompt_mask=pmask,
    )


def test_world_model_shapes_any_leading_dims():
    wm = _wm()
    for lead in [(B,), (B, K)]:
        obs, act = torch.randn(*lead, OBS), torch.randn(*lead, ACT)
        ctx = (torch.randn(*lead, H, OBS), torch.randn(*lead, H, ACT), torch.randn(*lead, H))
        z = wm.encode(*ctx)
        assert z.shape == (*lead, wm.z_dim)
        out = wm(obs, act, obs, *ctx)
        assert out["reward"].shape == lead and out["next_obs"].shape == (*lead, OBS)
        assert wm.step_errors(obs, act, torch.randn(*lead), obs, *ctx).shape == lead


def test_world_model_padding_of_context_is_ignored():
    wm = _wm()
    ctx_obs, ctx_act, ctx_rew = torch.randn(B, H, OBS), torch.randn(B, H, ACT), torch.randn(B, H)
    mask = torch.ones(B, H, dtype=torch.bool)
    mask[:, :2] = False
    z1 = wm.encode(ctx_obs, ctx_act, ctx_rew, mask)
    ctx_obs2, ctx_act2, ctx_rew2 = ctx_obs.clone(), ctx_act.clone(), ctx_rew.clone()
    ctx_obs2[:, :2] += 5.0
    ctx_act2[:, :2] -= 3.0
    ctx_rew2[:, :2] = 7.0
    z2 = wm.encode(ctx_obs2, ctx_act2, ctx_rew2, mask)
    torch.testing.assert_close(z1, z2)
    # without a mask, all-zero slots are padding: same z as the explicit mask
    zeroed = [x.clone() for x in (ctx_obs, ctx_act, ctx_rew)]
    for x in zeroed:
        x[:, :2] = 0
    torch.testing.assert_close(wm.encode(*zeroed), z1)


def test_context_windows_layout():
    b = _batch()
    o, a, r, m = context_windows(b, K)
    assert o.shape == (B, K, H, OBS) and a.shape == (B, K, H, ACT)
    assert r.shape == (B, K, H) and m.shape == (B, K, H)
    for j in range(K):
        torch.testing.assert_close(o[:, j], b["ctx_obs"][:, j:j + H])
        torch.testing.assert_close(r[:, j], b["ctx_rewards"][:, j:j + H])


@pytest.mark.parametrize("method", list(METHODS))
def test_policy_shapes(method):
    m = _policy(method)
    wm = _wm()
    b = _batch(pad=2)
    z = m.compute_z(b, wm) if m.cfg.use_z else None
    assert m(b, z).shape == (B, K, ACT)
    assert m.predict_action(b, wm).shape == (B, ACT)
    nb = {k: v for k, v in b.items() if not k.startswith("prompt_")}
    assert m(nb, z).shape == (B, K, ACT)  # no prompt keys: no prompt (warm-up, zero-shot)
    assert torch.isfinite(m.loss(b, z))
    with pytest.raises(ValueError) if m.cfg.use_z else _nullctx():
        m(b, None)


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_actions_respect_action_scale():
    m = _policy(action_scale=0.1)
    pred = m(_batch(), torch.randn(B, K, m.z_dim) * 10)
    assert pred.abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("pad,prompt_pad", [(0, 1), (2, 0), (3, 2)])
def test_padding_never_leaks(pad, prompt_pad):
    """Changing padded inputs (window and prompt) changes no real output."""
    m = _policy()
    b = _batch(pad=pad, prompt_pad=prompt_pad)
    z = torch.randn(B, K, m.z_dim)
    ref = m(b, z)
    b2 = {k: v.clone() for k, v in b.items()}
    z2 = z.clone()
    g = torch.Generator().manual_seed(1)
    for key in ("obs", "actions", "rtg"):
        x = b2[key]
        x[:, :pad] = torch.randn(x[:, :pad].shape, generator=g) * 10
    b2["timesteps"][:, :pad] = 7
    z2[:, :pad] = 99.0
    for key in ("prompt_obs", "prompt_actions", "prompt_rtg"):
        x = b2[key]
        x[:, :prompt_pad] = torch.randn(x[:, :prompt_pad].shape, generator=g) * 10
    b2["prompt_timesteps"][:, :prompt_pad] = 9
    out = m(b2, z2)
    torch.testing.assert_close(out[:, pad:], ref[:, pad:])
    # and the loss ignores padded positions entirely
    torch.testing.assert_close(m.loss(b2, z2), m.loss({**b, "actions": b["actions"]}, z) if pad == 0
                               else m.loss(_with_actions(b, b2, pad), z))


def _with_actions(b, b2, pad):
    # the loss compares predictions with batch["actions"]; padded actions differ
    # between b and b2 but are masked, so using b2's padded actions must not matter
    out = dict(b)
    acts = b["actions"].clone()
    acts[:, :pad] = b2["actions"][:, :pad]
    out["actions"] = acts
    return out


def test_causal_outputs_never_depend_on_later_tokens():
    m = _policy()
    b = _batch()
    z = torch.randn(B, K, m.z_dim)
    ref = m(b, z)
    for j in range(K - 1):
        b2 = {k: v.clone() for k, v in b.items()}
        z2 = z.clone()
        b2["obs"][:, j + 1:] += 3.0
        b2["rtg"][:, j + 1:] -= 2.0
        b2["actions"][:, j:] = -b2["actions"][:, j:]  # a_j comes after s_j: never seen by a^_j
        z2[:, j + 1:] += 1.0
        out = m(b2, z2)
        torch.testing.assert_close(out[:, :j + 1], ref[:, :j + 1])
        assert not torch.allclose(out[:, j + 1:], ref[:, j + 1:])


def test_prompt_changes_predictions_and_z_matters():
    m = _policy()
    b = _batch()
    z = torch.randn(B, K, m.z_dim)
    ref = m(b, z)
    b2 = dict(b, prompt_obs=b["prompt_obs"] + 1.0)
    assert not torch.allclose(m(b2, z), ref)
    assert not torch.allclose(m(b, z + 1.0), ref)


def test_gradients_finite_with_fully_padded_rows():
    m = _policy().train()
    b = _batch(pad=K - 1, prompt_pad=KP - 1)
    z = torch.randn(B, K, m.z_dim)
    m.loss(b, z).backward()
    for p in m.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
