"""Mixed precision of the policy (MetaDTConfig.amp): bfloat16 autocast, float32 master weights.

No GPU here: "auto" is checked to change nothing on the CPU, and "bf16" (autocast on
any device) is checked on the CPU against the float32 model. The Triton attention in
bfloat16 is checked under the interpreter (tests/kernels_interpret_cases.py and
tests/device_interpret_cases.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from metadt import tensorfile  # noqa: E402
from metadt.config.meta_dt import MetaDTConfig  # noqa: E402
from metadt.models import MetaDT  # noqa: E402
from metadt.models import meta_dt as meta_dt_module  # noqa: E402

OBS, ACT, K, KP, B = 3, 2, 6, 3, 5


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[1, :3] = False
    pmask = torch.ones(B, KP, dtype=torch.bool)
    pmask[2] = False
    return dict(obs=r(B, K, OBS), actions=r(B, K, ACT).clamp(-1, 1), rtg=r(B, K),
                timesteps=torch.arange(K).repeat(B, 1), mask=mask, prompt_obs=r(B, KP, OBS),
                prompt_actions=r(B, KP, ACT), prompt_rtg=r(B, KP),
                prompt_timesteps=torch.arange(KP).repeat(B, 1), prompt_mask=pmask)


def _policy(amp):
    cfg = MetaDTConfig.for_family("point-robot", "smoke").replace(
        window_len=K, prompt_len=KP, max_timestep=50, embed_dim=32, n_heads=2, mlp_dim=64,
        dropout=0.0, amp=amp)
    torch.manual_seed(0)
    return MetaDT(OBS, ACT, cfg)


def _loss_and_grads(model, z):
    loss = model.loss(_batch(), z)
    grads = torch.autograd.grad(loss, [p for p in model.parameters()])
    return loss.detach(), grads


def test_presets_and_validation():
    assert MetaDTConfig.for_family("point-robot", "paper").amp == "auto"
    assert MetaDTConfig.for_family("cheetah-vel", "paper").amp == "auto"
    for preset in ("cpu", "smoke"):
        assert MetaDTConfig.for_family("point-robot", preset).amp == "off"
    with pytest.raises(ValueError, match="amp"):
        MetaDTConfig(amp="fp8").validate()


def test_auto_is_float32_on_the_cpu_bit_for_bit():
    z = torch.randn(B, K, 16)
    off, auto = _policy("off"), _policy("auto")
    l0, g0 = _loss_and_grads(off, z)
    l1, g1 = _loss_and_grads(auto, z)
    assert torch.equal(l0, l1)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))


def test_bf16_autocast_matches_float32_within_bf16_rounding(monkeypatch):
    seen = []
    real = meta_dt_module.GPT.forward

    def spy(self, x, key_padding_mask=None):
        seen.append(self.blocks[0].attn.qkv(x).dtype)
        return real(self, x, key_padding_mask)

    monkeypatch.setattr(meta_dt_module.GPT, "forward", spy)
    z = torch.randn(B, K, 16)
    ref, amp = _policy("off"), _policy("bf16")
    l0, g0 = _loss_and_grads(ref, z)
    l1, g1 = _loss_and_grads(amp, z)
    assert seen == [torch.float32, torch.bfloat16]  # q, k, v reach attention in bf16
    # bf16 has an 8-bit mantissa (relative rounding 2^-8 = 0.4%); a few layers of it
    # move the loss by well under 2% and each gradient by under 5% of its largest entry.
    assert abs(float(l1) - float(l0)) <= 2e-2 * abs(float(l0))
    for a, b in zip(g1, g0):
        assert a.dtype == torch.float32  # gradients of float32 master weights
        assert float((a - b).abs().max()) <= 5e-2 * float(b.abs().max()) + 1e-6
    out = amp(_batch(), z)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert all(p.dtype == torch.float32 for p in amp.parameters())


def test_bf16_training_keeps_float32_weights_and_learns(tmp_path):
    from test_train_support import make_point_dataset

    from metadt.train.meta_dt import train_meta_dt

    goals = [(0.6, 0.2), (-0.4, 0.5), (0.3, -0.6), (-0.5, -0.3)]
    data = tmp_path / "ds"
    make_point_dataset(data, goals, num_train=3, episodes=4)
    cfg = MetaDTConfig.for_family("point-robot", "smoke", "dt").replace(
        quality="medium", amp="bf16", num_steps=30, lr=3e-3, log_every=10,
        checkpoint_every=30)
    summary = train_meta_dt(data, cfg, tmp_path / "run", progress=False)
    losses = np.asarray(summary["losses"])
    assert np.isfinite(losses).all() and losses[-10:].mean() < losses[:10].mean()
    state = tensorfile.load(tmp_path / "run" / "model.safetensors", None)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
