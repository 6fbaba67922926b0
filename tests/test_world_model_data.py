"""World-model training data: union of qualities, same-task decoding targets,
and the loss with targets against a plain PyTorch reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from metadt.config.world_model import WorldModelConfig
from metadt.data.dataset import Dataset, split_quality
from metadt.models import WorldModel
from metadt.train.columns import StepTable
from metadt.train.task_targets import TaskTargets
from metadt.evaluate.world_model_report import world_model_report
from metadt.train.world_model import train_world_model

from test_train_support import interrupted_world_model_checkpoints, make_point_dataset

GOALS = [(0.8, 0.8), (-0.8, -0.7), (0.7, -0.8), (-0.6, 0.9)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pr"
    make_point_dataset(path, GOALS, num_train=3, episodes=4,
                       qualities={"expert": 0.01, "medium": 0.06, "random": 1.0}, seed=3)
    return path


def test_union_store_holds_every_episode_in_order(dataset):
    ds = Dataset.open(dataset)
    parts = [ds.store(q) for q in ("random", "expert")]
    u = ds.store("random+expert")
    assert u.num_episodes == sum(p.num_episodes for p in parts)
    assert u.num_steps == sum(p.num_steps for p in parts)
    for col in ("obs", "actions", "rewards", "next_obs", "terminals", "truncations"):
        ref = np.concatenate([np.asarray(p.column(col)) for p in parts])
        np.testing.assert_array_equal(np.asarray(u.column(col)), ref)
    ref_tasks = np.concatenate([np.asarray(p.episode_tasks()) for p in parts])
    np.testing.assert_array_equal(np.asarray(u.episode_tasks()), ref_tasks)
    assert ds.store("random+expert") is u  # built once


@pytest.mark.parametrize("bad", ["random+", "random+random", "+medium", ""])
def test_bad_quality_expressions(bad):
    with pytest.raises(ValueError, match="joined by"):
        split_quality(bad)


@pytest.mark.parametrize("field", ["quality", "probe_quality"])
def test_unknown_quality_is_a_clear_error_before_training(field, dataset, tmp_path):
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        **{field: "medium+bogus" if field == "quality" else "mixd"})
    with pytest.raises(ValueError, match="no quality '(bogus|mixd)'"):
        train_world_model(dataset, cfg, tmp_path / "wm", progress=False)
    assert not (tmp_path / "wm").exists()


def test_task_targets_draw_steps_of_the_row_task(dataset):
    table = StepTable.of(Dataset.open(dataset).store("medium+random"))
    tt = TaskTargets(table, [0, 1, 2], k=5, seed=7)
    tasks = np.array([0, 2, 1, 2, 0, 0])
    idx = tt.draw(tasks, i=3)
    assert idx.shape == (6, 5)
    assert (table.task[idx] == tasks[:, None]).all()
    np.testing.assert_array_equal(idx, tt.draw(tasks, i=3))  # a function of (seed, i, rank)
    assert not np.array_equal(idx, tt.draw(tasks, i=4))
    assert not np.array_equal(idx, tt.draw(tasks, i=3, rank=1))
    # uniform over the task's steps: every step of task 1 is reachable, none of task 3
    many = tt.draw(np.ones(4000, dtype=np.int64), i=0).ravel()
    assert set(many.tolist()) == set(table.steps_of_tasks([1]).tolist())
    with pytest.raises(ValueError, match=r"task\(s\) \[3\]"):
        tt.draw(np.array([0, 3]), i=0)


def test_loss_with_targets_matches_reference():
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        use_transition_decoder=True, transition_loss_weight=0.5)
    torch.manual_seed(0)
    wm = WorldModel(2, 2, cfg).eval()
    wm.set_normalization(np.array([0.1, -0.2]), np.array([0.5, 2.0]), -1.0, 0.7)
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    B, k, h = 6, 3, cfg.context_len
    b = dict(obs=r(B, 2), actions=r(B, 2), rewards=r(B), next_obs=r(B, 2), ctx_obs=r(B, h, 2),
             ctx_actions=r(B, h, 2), ctx_rewards=r(B, h), ctx_mask=torch.ones(B, h, dtype=torch.bool),
             target_obs=r(B, k, 2), target_actions=r(B, k, 2), target_rewards=r(B, k),
             target_next_obs=r(B, k, 2))
    loss, parts = wm.loss(b)
    # reference: one forward per transition with the row's z, MSE over all 1 + k of them
    rew_err, nxt_err = [], []
    with torch.no_grad():
        _reference_errors(wm, b, B, k, rew_err, nxt_err)
    ref_r, ref_t = np.mean(rew_err), np.mean(nxt_err)
    assert parts["reward_loss"] == pytest.approx(ref_r, rel=1e-4)
    assert parts["transition_loss"] == pytest.approx(ref_t, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(ref_r + 0.5 * ref_t, rel=1e-4)
    # without targets: the transition at t only
    b0 = {key: v for key, v in b.items() if not key.startswith("target_")}
    _, p0 = wm.loss(b0)
    assert p0["reward_loss"] == pytest.approx(np.mean(rew_err[::k + 1]), rel=1e-4)


def _reference_errors(wm, b, B, k, rew_err, nxt_err):
    """Per-transition squared errors (normalized units), one forward per transition."""
    for i in range(B):
        rows = [(b["obs"][i], b["actions"][i], b["rewards"][i], b["next_obs"][i])]
        rows += [(b["target_obs"][i, j], b["target_actions"][i, j], b["target_rewards"][i, j],
                  b["target_next_obs"][i, j]) for j in range(k)]
        for o, a, rw, n in rows:
            out = wm(o[None], a[None], n[None], b["ctx_obs"][i:i + 1], b["ctx_actions"][i:i + 1],
                     b["ctx_rewards"][i:i + 1], b["ctx_mask"][i:i + 1])
            rew_err.append(float((out["reward"][0] - rw) / wm.reward_std) ** 2)
            nxt_err.append(float((((out["next_obs"][0] - n) / wm.obs_std) ** 2).mean()))


def test_union_and_task_targets_train_and_resume_exactly(dataset, tmp_path):
    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(
        quality="random+medium+expert", task_targets=3, num_steps=12, checkpoint_every=4,
        log_every=4)
    rep = train_world_model(dataset, cfg, tmp_path / "a", progress=False,
                            report=world_model_report)
    assert rep["quality"] == "random+medium+expert"
    assert set(rep["probe_by_quality"]) == {"expert", "medium", "random"}
    assert rep["probe"]["rmse_test"] >= 0
    assert rep["probe"]["quality"] == "random+medium+expert"  # the dataset has no mixed
    ca, cb = interrupted_world_model_checkpoints(dataset, cfg, 8, tmp_path / "r")
    assert ca["step"] == cb["step"] == 12
    for key in ca["model"]:
        torch.testing.assert_close(ca["model"][key], cb["model"][key], rtol=0, atol=0)


def test_default_recipe_on_a_dataset_without_random_says_what_to_do(tmp_path):
    path = tmp_path / "no-random"
    make_point_dataset(path, GOALS, num_train=3, episodes=2,
                       qualities={"expert": 0.01, "medium": 0.06}, seed=4)
    cfg = WorldModelConfig.for_family("point-robot", "smoke")
    assert cfg.quality == "random+medium+expert"
    with pytest.raises(ValueError, match=r"no quality 'random'.*--quality mixed"):
        train_world_model(path, cfg, tmp_path / "wm", progress=False)
    assert not (tmp_path / "wm").exists()


def test_probe_r2_hand_computed_and_undefined_for_a_constant_target():
    from metadt.evaluate.world_model_report import _r2, _r2_per_dim

    y = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])
    pred = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    # SS_res = 1 + 0 + 1 + 0 + 1 + 1 = 4; SS_tot = 8 (x) + 6 (y) = 14
    assert _r2(y, pred) == pytest.approx(1 - 4 / 14)
    assert _r2_per_dim(y, pred) == pytest.approx(((1 - 2 / 8) + (1 - 2 / 6)) / 2)
    # one task: the goal does not vary (up to rounding), R^2 is undefined, not -1e29
    const = np.full((5, 2), 0.7) + np.array([0.0, 1e-17])[None]
    assert _r2(const, const + 0.1) is None and _r2_per_dim(const, const + 0.1) is None
