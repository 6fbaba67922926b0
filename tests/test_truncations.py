"""Terminations and time-limit truncations are kept apart: the store's column,
its on-disk format (version 2, version-1 stores still load) and SAC's
bootstrapping (through a truncation, never through a termination)."""
from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
import torch

from metadt import TrajectoryStore
from store_files import entry, manifest, rewrite_npy, write_manifest


def _ep(s, T, **kw):
    return s.add_episode(np.arange(T, dtype=np.float32)[:, None], np.zeros((T, 1)), np.ones(T), **kw)


def reference_truncations(terminals_per_episode):
    """The documented default: the last step of an episode is a truncation unless it is terminal."""
    out = []
    for term in terminals_per_episode:
        t = np.zeros(len(term), np.float32)
        t[-1] = float(term[-1] == 0)
        out.append(t)
    return np.concatenate(out)


def test_default_explicit_and_invalid_truncations():
    s = TrajectoryStore(1, 1)
    _ep(s, 3)                                                   # time limit: last step truncated
    _ep(s, 2, terminals=[0, 1])                                  # terminated: no truncation
    _ep(s, 4, terminals=[0, 0, 0, 0], truncations=[0, 0, 0, 0])  # explicit: neither
    _ep(s, 2, truncations=np.array([0, 1], bool))
    np.testing.assert_array_equal(s.column("truncations"), [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(s.column("terminals"), [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    before = np.array(s.column("truncations"))
    for bad, msg in [([0, 0.5], "0 or 1"), ([0, 2], "0 or 1"), ([np.nan, 0], "0 or 1"), ([1], "truncations")]:
        with pytest.raises(ValueError, match=msg):
            _ep(s, 2, truncations=bad)
    assert s.num_episodes == 4
    np.testing.assert_array_equal(s.column("truncations"), before)
    with pytest.raises(ValueError, match="taken|reserved"):
        s.attach_column("truncations", np.zeros(s.num_steps))


def test_online_truncations():
    s = TrajectoryStore(1, 1)
    step = lambda done, **kw: s.add_step([0.0], [0.0], 1.0, [0.0], done, **kw)  # noqa: E731
    step(False)
    step(True, terminal=False)                # a time limit: truncated by default
    step(True)                                # terminal (terminal defaults to done)
    step(False)
    step(True, terminal=False, truncated=False)  # explicitly neither
    step(False)
    s.close_episode(0)                        # cut without a done step: truncated
    step(True, terminal=True, truncated=True)  # both, as gymnasium allows
    np.testing.assert_array_equal(s.column("truncations"), [0, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(s.column("terminals"), [0, 0, 1, 0, 0, 0, 1])
    with pytest.raises(ValueError, match="done=True"):
        step(False, truncated=True)
    assert s.num_open_steps == 0


def test_format_version_2_round_trip(tmp_path):
    s = TrajectoryStore(1, 1)
    _ep(s, 3)
    _ep(s, 2, terminals=[0, 1])
    _ep(s, 3, truncations=[0, 1, 0])
    s.save(tmp_path / "st")
    m = manifest(tmp_path / "st")
    assert m["version"] == 2
    e = entry(m, "truncations")
    assert e["file"] == "truncations.npy" and e["dtype"] == "<f4" and e["shape"] == [8]
    np.testing.assert_array_equal(np.load(tmp_path / "st" / "truncations.npy"), s.column("truncations"))
    for mmap in (True, False):
        t = TrajectoryStore.load(tmp_path / "st", mmap=mmap, verify=True)
        np.testing.assert_array_equal(t.column("truncations"), [0, 0, 1, 0, 0, 0, 1, 0])


def _to_version_1(d):
    """Rewrite a store as metadt's format version 1 wrote it (no truncations file)."""
    m = manifest(d)
    m["version"] = 1
    m["files"] = [f for f in m["files"] if f["name"] != "truncations"]
    (d / "truncations.npy").unlink()
    write_manifest(d, m)


def test_version_1_store_loads_with_the_implicit_rule(tmp_path):
    rng = np.random.default_rng(0)
    s = TrajectoryStore(2, 1)
    terms = []
    for T in (5, 1, 7, 3):
        term = (rng.random(T) < 0.3).astype(np.float32)
        terms.append(term)
        # explicit truncations in the middle are lost in version 1; only the rule survives
        s.add_episode(rng.normal(size=(T, 2)), rng.normal(size=(T, 1)), rng.normal(size=T), terminals=term)
    d = tmp_path / "v1"
    s.save(d)
    _to_version_1(d)
    for mmap, verify in [(True, False), (True, True), (False, True)]:
        t = TrajectoryStore.load(d, mmap=mmap, verify=verify)
        np.testing.assert_array_equal(t.column("truncations"), reference_truncations(terms))
        np.testing.assert_array_equal(t.column("terminals"), np.concatenate(terms))
    # saving it again writes version 2 with the derived column
    t = TrajectoryStore.load(d)
    t.save(d)
    assert manifest(d)["version"] == 2
    np.testing.assert_array_equal(np.load(d / "truncations.npy"), reference_truncations(terms))
    # a version-1 manifest that lists a truncations file is not version 1
    s.save(tmp_path / "mixed")
    m = manifest(tmp_path / "mixed")
    m["version"] = 1
    write_manifest(tmp_path / "mixed", m)
    with pytest.raises(ValueError, match="unexpected .*truncations"):
        TrajectoryStore.load(tmp_path / "mixed")
    # a version-2 manifest without it is refused
    s.save(tmp_path / "v2")
    m = manifest(tmp_path / "v2")
    m["files"] = [f for f in m["files"] if f["name"] != "truncations"]
    write_manifest(tmp_path / "v2", m)
    with pytest.raises(ValueError, match="truncations"):
        TrajectoryStore.load(tmp_path / "v2")


def test_verify_refuses_a_truncation_that_is_not_0_or_1(tmp_path):
    s = TrajectoryStore(1, 1)
    _ep(s, 4)
    d = tmp_path / "st"
    s.save(d)
    rewrite_npy(d, "truncations", np.array([0, 0.5, 0, 1], np.float32))  # CRC fixed up
    TrajectoryStore.load(d)  # values are trusted without verify
    with pytest.raises(ValueError, match="truncations.npy.*0 or 1"):
        TrajectoryStore.load(d, verify=True)
    rewrite_npy(d, "truncations", np.array([0, np.nan, 0, 1], np.float32))
    with pytest.raises(ValueError, match="truncations.npy.*non-finite"):
        TrajectoryStore.load(d, verify=True)
    assert json.loads((d / "manifest.json").read_text())["version"] == 2
    assert zlib.crc32((d / "truncations.npy").read_bytes()) == entry(manifest(d), "truncations")["crc32"]


def test_sac_bootstraps_through_a_truncation_not_a_termination():
    """Replay keeps a time-limit step non-terminal; SAC's target bootstraps there
    (r + gamma * (min Q'(s', a') - alpha log pi(a'|s'))) and not after a termination (r)."""
    from metadt.collect.replay import Replay
    from metadt.collect.sac import SACEnsemble
    from metadt.config.collect import SACConfig

    torch.manual_seed(0)
    replay = Replay(1, 2, 2)
    # episode 1: two steps, cut by the horizon (done, not terminal); episode 2: terminates at step 0
    replay.add(np.full((1, 2), 0.1), np.full((1, 2), 0.05), np.array([1.0]), np.full((1, 2), 0.2), np.array([0]), False)
    replay.add(np.full((1, 2), 0.2), np.full((1, 2), -0.05), np.array([2.0]), np.full((1, 2), 0.3), np.array([0]), True)
    replay.add(np.full((1, 2), -0.4), np.full((1, 2), 0.02), np.array([-3.0]), np.full((1, 2), -0.5), np.array([1]), True)
    store = replay.stores[0]
    np.testing.assert_array_equal(store.column("terminals"), [0, 0, 1])
    np.testing.assert_array_equal(store.column("truncations"), [0, 1, 0])
    batch = replay.sample(64, seed=3, update=0, device=torch.device("cpu"))
    rew = batch["rewards"][0].numpy()
    term = batch["terminals"][0].numpy()
    np.testing.assert_array_equal(term, (rew == -3.0).astype(np.float32))  # only the true termination
    assert (rew == 2.0).any() and (rew == -3.0).any()

    cfg = SACConfig(hidden_dim=8, batch_size=64)
    sac = SACEnsemble(1, 2, 2, [-0.1, -0.1], [0.1, 0.1], cfg, device="cpu", seed=0)
    gen = torch.Generator().manual_seed(5)
    noise_next = torch.randn(1, 64, 2, generator=gen)
    noise_pi = torch.randn(1, 64, 2, generator=gen)
    with torch.no_grad():
        q = sac.q_values(sac.critic, batch["obs"], batch["actions"])[0]            # [2, B], before the update
        a2, logp2, _ = sac.policy.sample(batch["next_obs"], noise_next)
        q2 = sac.q_values(sac.critic_target, batch["next_obs"], a2).min(dim=1).values[0]
    gamma, alpha = cfg.gamma, cfg.alpha
    target = np.empty(64)
    for i in range(64):  # by hand, per sample
        if rew[i] == -3.0:
            target[i] = rew[i]                                                     # terminal: no bootstrap
        else:
            target[i] = rew[i] + gamma * (float(q2[i]) - alpha * float(logp2[0, i]))  # incl. the truncated step
    want_q1 = float(np.mean((q[0].numpy().astype(np.float64) - target) ** 2))
    out = sac.update(batch, noise_next=noise_next, noise_pi=noise_pi)
    assert float(out["q1_loss"][0]) == pytest.approx(want_q1, rel=1e-5)
    # and the truncated step does bootstrap: treating it as terminal would give another loss
    wrong = np.where(rew == 2.0, rew, target)
    assert abs(float(np.mean((q[0].numpy() - wrong) ** 2)) - want_q1) > 1e-4
