"""Task families: dimensions, horizons, sampling, rewards, physics, vector envs, errors.

Short rollouts only; Meta-World families are built once per module.
"""
from __future__ import annotations

import json

import mujoco
import numpy as np
import pytest

from metadt.envs import FAMILIES, family_from_card, family_from_tasks, make_family
from metadt.envs.param import PARAMS

MUJOCO = ["cheetah-vel", "cheetah-dir", "ant-dir", "hopper-param", "walker-param"]
METAWORLD = ["reach", "sweep", "door-lock"]
ALL = ["point-robot", *MUJOCO, *METAWORLD]

DIMS = {  # protocol section 1: obs, act, horizon, default tasks, default train
    "point-robot": (2, 2, 20, 50, 45), "cheetah-vel": (20, 6, 200, 50, 45),
    "cheetah-dir": (20, 6, 200, 2, 2), "ant-dir": (27, 8, 200, 50, 45),
    "hopper-param": (11, 3, 200, 50, 45), "walker-param": (17, 6, 200, 50, 45),
    "reach": (39, 4, 500, 20, 15), "sweep": (39, 4, 500, 20, 15), "door-lock": (39, 4, 500, 20, 15),
}
RETURN_SCALE = {"point-robot": 10.0}


@pytest.fixture(scope="module")
def families():
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = make_family(name, seed=0)
        return cache[name]

    return get


def _actions(fam, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(fam.action_low, fam.action_high, size=(n, fam.act_dim))


def _rollout(env, actions, seed=0):
    obs, _ = env.reset(seed=seed)
    out_obs, rews, infos = [obs], [], []
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        assert term is False
        out_obs.append(obs)
        rews.append(r)
        infos.append(info)
    return np.array(out_obs), np.array(rews), infos


def test_registry_lists_every_family():
    assert list(FAMILIES) == ALL
    assert all(isinstance(d, str) and d for d in FAMILIES.values())


@pytest.mark.parametrize("name", ALL)
def test_dimensions_split_and_card(families, name):
    fam = families(name)
    obs_dim, act_dim, horizon, n, k = DIMS[name]
    assert (fam.obs_dim, fam.act_dim, fam.horizon, fam.num_tasks) == (obs_dim, act_dim, horizon, n)
    assert fam.return_scale == RETURN_SCALE.get(name, 500.0)
    assert fam.train_ids == list(range(k))
    assert fam.test_ids == (list(range(n)) if k == n else list(range(k, n)))
    assert fam.train_tasks == [fam.tasks[i] for i in fam.train_ids]
    assert fam.action_low.shape == fam.action_high.shape == (act_dim,)
    bound = 0.1 if name == "point-robot" else 1.0
    assert np.all(fam.action_high == bound) and np.all(fam.action_low == -bound)
    assert all(t["family"] == name for t in fam.tasks)
    feats = fam.task_feature_matrix()
    assert feats.shape[0] == n and feats.ndim == 2 and np.all(np.isfinite(feats))
    # the card is JSON and rebuilds the same family
    card = json.loads(json.dumps(fam.to_json()))
    again = family_from_card(card)
    assert again.tasks == fam.tasks and again.train_ids == fam.train_ids
    assert again.test_ids == fam.test_ids and again.options == fam.options
    again2 = family_from_tasks(name, card["tasks"], num_train=card["num_train"])
    assert again2.tasks == fam.tasks


@pytest.mark.parametrize("name", ALL)
def test_sampling_is_a_pure_function_of_the_seed(families, name):
    fam = families(name)
    small = {"num_tasks": 3, "num_train": 2} if name != "cheetah-dir" else {}
    a = make_family(name, seed=0, **small)
    b = make_family(name, seed=0, **small)
    assert a.tasks == b.tasks
    if name == "cheetah-dir":
        assert [t["direction"] for t in a.tasks] == [1.0, -1.0]
        return
    c = make_family(name, seed=1, **small)
    assert c.tasks != a.tasks
    if name not in METAWORLD:  # prefix of the default draw (Meta-World picks by index)
        assert a.tasks[:3] == fam.tasks[:3]


def test_sampling_matches_the_documented_draws():
    rng = np.random.default_rng(7)
    fam = make_family("point-robot", seed=7)
    assert np.array_equal(fam.task_feature_matrix(), rng.uniform(-1, 1, size=(50, 2)))
    fam = make_family("cheetah-vel", seed=7)
    assert np.array_equal(fam.task_feature_matrix()[:, 0], np.random.default_rng(7).uniform(0, 3, 50))
    fam = make_family("ant-dir", seed=7)
    angles = np.random.default_rng(7).uniform(0, 2 * np.pi, 50)
    assert np.array_equal([t["angle"] for t in fam.tasks], angles)


@pytest.mark.parametrize("name", ALL)
def test_full_horizon_then_truncated(families, name):
    fam = families(name)
    env = fam.make_env(fam.tasks[0])
    obs, info = env.reset(seed=0)
    assert obs.shape == (fam.obs_dim,) and env.observation_space.shape == (fam.obs_dim,)
    assert env.action_space.shape == (fam.act_dim,)
    acts = _actions(fam, fam.horizon)
    for t, a in enumerate(acts):
        obs, r, term, trunc, info = env.step(a)
        assert obs.shape == (fam.obs_dim,) and np.isfinite(r)
        assert term is False and trunc is (t == fam.horizon - 1)
        if name in METAWORLD:
            assert "success" in info and info["success"] in (0.0, 1.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(acts[0])
    env.reset(seed=1)
    env.step(acts[0])  # a new episode runs again
    env.close()


@pytest.mark.parametrize("name", ALL)
def test_bad_input_raises_clear_errors(families, name):
    fam = families(name)
    other = families("point-robot" if name != "point-robot" else "cheetah-vel")
    foreign = other.tasks[0]
    with pytest.raises(ValueError, match="family"):
        fam.check_task(foreign)
    with pytest.raises(ValueError, match="family"):
        fam.make_env(foreign)
    with pytest.raises(ValueError):
        family_from_tasks(name, [foreign], num_train=1)
    env = fam.make_env(fam.tasks[0])
    with pytest.raises(ValueError, match="family"):
        env.set_task(foreign)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(fam.act_dim + 1))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((1, fam.act_dim)))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(fam.act_dim, np.nan))
    env.close()


def test_unknown_family_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown task family 'nope'.*point-robot"):
        make_family("nope")
    with pytest.raises(ValueError, match="num_train"):
        make_family("point-robot", num_tasks=5, num_train=6)
    with pytest.raises(ValueError, match="seed"):
        make_family("point-robot", seed=-1)
    with pytest.raises(ValueError, match="option"):
        make_family("point-robot", bogus=1)
    with pytest.raises(ValueError, match="exactly 2"):
        make_family("cheetah-dir", num_tasks=3)
    fam = make_family("cheetah-vel")
    with pytest.raises(ValueError):
        fam.check_task({"family": "cheetah-vel", "velocity": "fast"})
    with pytest.raises(ValueError):
        fam.check_task({"family": "cheetah-vel"})
    with pytest.raises(ValueError):
        make_family("hopper-param").check_task({**make_family("walker-param").tasks[0],
                                                "family": "hopper-param"})


def test_default_split_keeps_the_fraction():
    assert make_family("point-robot", num_tasks=10).num_train == 9
    assert make_family("cheetah-vel", num_tasks=1).test_ids == [0]  # one task: train = test


# --------------------------------------------------------------- task effect
@pytest.mark.parametrize("name", ["point-robot", "cheetah-vel", "cheetah-dir", "ant-dir", *METAWORLD])
def test_reward_families_change_rewards_not_dynamics(families, name):
    fam = families(name)
    env = fam.make_env(fam.tasks[0])
    acts = _actions(fam, min(30, fam.horizon))
    obs0, r0, _ = _rollout(env, acts)
    env.set_task(fam.tasks[1])
    obs1, r1, _ = _rollout(env, acts)
    assert not np.allclose(r0, r1)
    if name not in METAWORLD:  # Meta-World tasks also move objects
        np.testing.assert_array_equal(obs0, obs1)


@pytest.mark.parametrize("name", ["hopper-param", "walker-param"])
def test_param_families_change_transitions(families, name):
    fam = families(name)
    env = fam.make_env(fam.tasks[0])
    acts = _actions(fam, min(30, fam.horizon))
    obs0, r0, _ = _rollout(env, acts)
    env.set_task(fam.tasks[1])
    obs1, _, _ = _rollout(env, acts)
    assert np.abs(obs0[1:] - obs1[1:]).max() > 1e-3
    env.set_task(fam.tasks[0])
    obs2, r2, _ = _rollout(env, acts)
    np.testing.assert_array_equal(obs0, obs2)  # switching back is exact
    np.testing.assert_array_equal(r0, r2)


# -------------------------------------------------------------- reward checks
def test_point_robot_reward_and_clipping():
    fam = make_family("point-robot", seed=3)
    task = fam.tasks[4]
    goal = np.array(task["goal"])
    env = fam.make_env(task)
    acts = np.random.default_rng(0).uniform(-0.3, 0.3, size=(20, 2))  # beyond the bounds
    obs, rews, _ = _rollout(env, acts)
    pos = np.cumsum(np.clip(acts, -0.1, 0.1), axis=0)
    np.testing.assert_allclose(obs[0], 0.0)
    np.testing.assert_allclose(obs[1:], pos, atol=1e-12)
    np.testing.assert_allclose(rews, -np.linalg.norm(pos - goal, axis=1), atol=1e-12)


def _torso_xpos(model, qpos):
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    return data.xpos[model.body("torso").id].copy()


@pytest.mark.parametrize("name", ["cheetah-vel", "cheetah-dir"])
def test_cheetah_reward_and_obs_from_simulator_state(families, name):
    fam = families(name)
    for task in fam.tasks[:2]:
        env = fam.make_env(task)
        env.reset(seed=5)
        m, d = env.unwrapped.model, env.unwrapped.data
        assert m.opt.timestep * env.unwrapped.frame_skip == pytest.approx(0.05)
        for a in _actions(fam, 15, seed=2) * 1.5:  # some beyond the bounds
            x0 = d.qpos[0]
            obs, r, *_ = env.step(a)
            v = (d.qpos[0] - x0) / 0.05
            ac = np.clip(a, -1, 1)
            ctrl = 0.05 * np.sum(ac ** 2)
            want = (-abs(v - task["velocity"]) if name == "cheetah-vel"
                    else task["direction"] * v) - ctrl
            assert r == pytest.approx(want, abs=1e-10)
            expect_obs = np.concatenate([d.qpos[1:], d.qvel, _torso_xpos(m, d.qpos)])
            np.testing.assert_allclose(obs, expect_obs, atol=1e-12)


def test_ant_dir_reward_from_simulator_state(families):
    fam = families("ant-dir")
    task = fam.tasks[2]
    env = fam.make_env(task)
    env.reset(seed=1)
    m, d = env.unwrapped.model, env.unwrapped.data
    theta = task["angle"]
    contact_seen = 0.0
    for a in _actions(fam, 40, seed=3):
        xy0 = d.qpos[:2].copy()
        obs, r, *_ = env.step(a)
        np.testing.assert_array_equal(obs, np.concatenate([d.qpos[2:], d.qvel]))
        vel = (d.qpos[:2] - xy0) / 0.05
        contact = 5e-4 * np.sum(np.square(np.clip(d.cfrc_ext, -1, 1)))
        contact_seen = max(contact_seen, contact)
        want = vel @ [np.cos(theta), np.sin(theta)] - 0.5 * np.sum(a ** 2) - contact + 1.0
        assert r == pytest.approx(want, abs=1e-10)
    assert contact_seen > 0  # gymnasium computes the contact cost (documented choice)
    zero = make_family("ant-dir", contact_cost_weight=0.0)
    assert zero.to_json()["options"]["contact_cost_weight"] == 0.0
    env0 = zero.make_env(task)
    env0.reset(seed=1)
    _, _, _, _, info = env0.step(np.ones(8))
    assert info["reward_contact"] == 0.0


# ------------------------------------------------------ parameter randomization
@pytest.mark.parametrize("name", ["hopper-param", "walker-param"])
def test_param_randomization_changes_the_model_and_is_undone(families, name):
    fam = families(name)
    env = fam.make_env(fam.tasks[0])
    model = env.unwrapped.model
    assert model.opt.timestep == 0.004 and env.unwrapped.dt == pytest.approx(0.016)
    defaults = fam.defaults()
    ones = {"family": name, **{p: np.ones_like(defaults[p]).tolist() for p, _ in PARAMS}}
    for task in fam.tasks[:3]:
        env.set_task(task)
        for p, base in PARAMS:
            mult = np.asarray(task[p])
            np.testing.assert_array_equal(getattr(model, p), defaults[p] * mult)
            nz = defaults[p] != 0
            assert not np.allclose(getattr(model, p)[nz], defaults[p][nz])
            u = np.log(mult) / np.log(base)
            assert np.all(np.abs(u) <= 3.0 + 1e-9)
    env.set_task(ones)
    for p, _ in PARAMS:
        np.testing.assert_array_equal(getattr(model, p), defaults[p])  # exactly restored
    # u ~ U(-3, 3) per element, independently: spread over the range
    u_all = np.concatenate([np.log(np.asarray(t["body_mass"])) / np.log(1.5) for t in fam.tasks])
    assert u_all.min() < -2.5 and u_all.max() > 2.5
    fresh = fam.make_env(fam.tasks[1])
    env.set_task(fam.tasks[1])
    for p, _ in PARAMS:
        np.testing.assert_array_equal(getattr(model, p), getattr(fresh.unwrapped.model, p))


@pytest.mark.parametrize("name", ["hopper-param", "walker-param"])
def test_param_reward_and_no_termination(families, name):
    fam = families(name)
    env = fam.make_env(fam.tasks[5])
    env.reset(seed=0)
    d = env.unwrapped.data
    for a in _actions(fam, 60, seed=4):
        x0 = d.qpos[0]
        obs, r, term, trunc, _ = env.step(a)
        assert term is False
        assert r == pytest.approx((d.qpos[0] - x0) / 0.016 + 1.0 - 1e-3 * np.sum(a ** 2), abs=1e-10)
        np.testing.assert_array_equal(obs, np.concatenate([d.qpos[1:], np.clip(d.qvel, -10, 10)]))


# ------------------------------------------------------------------ Meta-World
def test_reach_tasks_come_from_ml1_train_and_test_sets(families):
    import pickle

    import metaworld

    fam = families("reach")
    ml1 = metaworld.ML1("reach-v3", seed=0)
    assert [t["split"] for t in fam.train_tasks] == ["train"] * 15
    assert [t["split"] for t in fam.test_tasks] == ["test"] * 5
    for t in fam.tasks:
        source = ml1.train_tasks if t["split"] == "train" else ml1.test_tasks
        data = pickle.loads(source[t["ml1_index"]].data)
        np.testing.assert_array_equal(data["rand_vec"], t["rand_vec"])
        np.testing.assert_array_equal(t["goal"], data["rand_vec"][3:])  # reach: goal = rand_vec[3:]
    assert len({t["ml1_index"] for t in fam.train_tasks}) == 15


@pytest.mark.parametrize("name", METAWORLD)
def test_metaworld_goal_hidden_and_success_recorded(families, name):
    fam = families(name)
    env = fam.make_env(fam.tasks[0])
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[-3:], 0.0)  # goal hidden
    _, _, infos = _rollout(env, _actions(fam, 5))
    assert all(isinstance(i["success"], float) for i in infos)
    venv = fam.make_vector_env(fam.tasks[:2], seed=0)
    venv.reset()
    _, r, term, trunc, infos = venv.step(_actions(fam, 2))
    assert infos["success"].shape == (2,) and r.shape == (2,)
    venv.close()


def test_metaworld_success_when_reaching_the_goal(families):
    fam = families("reach")
    env = fam.make_env(fam.tasks[0])
    env.reset(seed=0)
    mw = env.unwrapped_metaworld
    goal = np.asarray(fam.tasks[0]["goal"])
    success = 0.0
    for _ in range(150):  # a proportional controller on the hand position
        delta = (goal - mw.tcp_center) * 20.0
        _, _, _, _, info = env.step(np.append(np.clip(delta, -1, 1), 0.0))
        success = max(success, info["success"])
    assert success == 1.0


def test_metaworld_task_data_in_a_card_is_never_unpickled(families, tmp_path):
    """A card's ``data`` (metaworld's pickle) is not read: a payload in it runs nothing,
    and the env is set from the JSON fields (the same env as the original task's)."""
    import base64
    import pickle
    from pathlib import Path

    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    fam = families("reach")
    bad = dict(fam.tasks[0])
    bad["data"] = base64.b64encode(pickle.dumps({"rand_vec": Payload()})).decode()
    fam.check_task(bad)
    a, b = fam.make_env(fam.tasks[0]), fam.make_env(bad)
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(a.unwrapped_metaworld._target_pos,
                                  np.asarray(fam.tasks[0]["goal"]))
    assert not (tmp_path / "pwned").exists()
    for rand_vec in ([0.0] * 100, [float("nan")] * 6, "x", [[1.0]]):
        with pytest.raises(ValueError, match="rand_vec"):
            fam.check_task(dict(fam.tasks[0], rand_vec=rand_vec))
    with pytest.raises(ValueError):
        fam.check_task(dict(families("sweep").tasks[0], family="reach"))


# ------------------------------------------------------------------ vector envs
@pytest.mark.parametrize("name", ["point-robot", "cheetah-vel", "hopper-param"])
def test_vector_env_matches_single_envs(families, name):
    fam = families(name)
    tasks = fam.tasks[:3]
    venv = fam.make_vector_env(tasks, seed=10)
    assert venv.num_envs == 3
    obs, _ = venv.reset()  # uses the construction seed: env i gets 10 + i
    assert obs.shape == (3, fam.obs_dim)
    steps = min(fam.horizon, 25)
    acts = _actions(fam, steps * 3, seed=1).reshape(steps, 3, fam.act_dim)
    vobs, vrew = [obs], []
    for a in acts:
        o, r, term, trunc, _ = venv.step(a)
        assert r.shape == (3,) and term.dtype == bool and trunc.dtype == bool and not term.any()
        vobs.append(o)
        vrew.append(r)
    for i, task in enumerate(tasks):
        o, r, _ = _rollout(fam.make_env(task), acts[:, i], seed=10 + i)
        np.testing.assert_allclose(np.array(vobs)[:, i], o, atol=1e-12)
        np.testing.assert_allclose(np.array(vrew)[:, i], r, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros((2, fam.act_dim)))
    bad = np.zeros((3, fam.act_dim))
    bad[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"\[1\]"):
        venv.step(bad)
    with pytest.raises(ValueError, match="family"):
        venv.set_tasks([families("ant-dir").tasks[0]] * 3 if name != "ant-dir" else [])
    with pytest.raises(ValueError, match="3 tasks"):
        venv.set_tasks(fam.tasks[:2])
    venv.close()


@pytest.mark.parametrize("name", ["point-robot", "cheetah-dir"])
def test_vector_env_truncates_together_without_autoreset(families, name):
    fam = families(name)
    venv = fam.make_vector_env(fam.tasks[:2])
    venv.reset(seed=0)
    zeros = np.zeros((2, fam.act_dim))
    for t in range(fam.horizon):
        _, _, term, trunc, _ = venv.step(zeros)
        assert not term.any()
        assert trunc.all() == (t == fam.horizon - 1) and trunc.any() == trunc.all()
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(zeros)
    venv.set_tasks(fam.tasks[:2][::-1])
    assert venv.tasks == fam.tasks[:2][::-1]
    obs, _ = venv.reset(seed=0)
    venv.step(zeros)
    venv.close()


def test_point_robot_vector_set_tasks_changes_rewards():
    fam = make_family("point-robot")
    venv = fam.make_vector_env(fam.tasks[:4])
    venv.reset()
    _, r0, *_ = venv.step(np.zeros((4, 2)))
    venv.set_tasks(fam.tasks[4:8])
    venv.reset()
    _, r1, *_ = venv.step(np.zeros((4, 2)))
    np.testing.assert_allclose(-r1, np.linalg.norm(fam.task_feature_matrix(fam.tasks[4:8]), axis=1))
    assert not np.allclose(r0, r1)


def test_async_backend_has_the_same_interface():
    fam = make_family("cheetah-vel", num_tasks=4)
    sync = fam.make_vector_env(fam.tasks[:2], backend="sync")
    asyn = fam.make_vector_env(fam.tasks[:2], backend="async")
    try:
        o1, _ = sync.reset(seed=3)
        o2, _ = asyn.reset(seed=3)
        np.testing.assert_allclose(o1, o2)
        a = _actions(fam, 2)
        s1 = sync.step(a)
        s2 = asyn.step(a)
        for x, y in zip(s1[:4], s2[:4]):
            np.testing.assert_allclose(x, y)
        assert set(s2[4]) >= {"x_velocity"}
        asyn.set_tasks(fam.tasks[2:4])
        sync.set_tasks(fam.tasks[2:4])
        o1, _ = sync.reset(seed=4)
        o2, _ = asyn.reset(seed=4)
        np.testing.assert_allclose(sync.step(a)[1], asyn.step(a)[1])
        with pytest.raises(ValueError, match="shape"):
            asyn.step(np.zeros(6))
    finally:
        sync.close()
        asyn.close()
    with pytest.raises(ValueError, match="backend"):
        fam.make_vector_env(fam.tasks[:1], backend="threads")


# ------------------------------------------------------------------------- CLI
def test_cli_lists_families(capsys):
    from metadt.cli import main

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert name in out
    assert "45+5" in out and "15+5" in out
    assert main(["envs", "--family", "point-robot", "--num-tasks", "3", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["name"] == "point-robot" and len(card["tasks"]) == 3
    assert main(["envs", "--family", "nope"]) == 1


@pytest.mark.parametrize("name", ["point-robot", "cheetah-dir", "hopper-param", "reach"])
def test_envs_pickle_for_their_current_task(families, name):
    import pickle

    fam = families(name)
    env = fam.make_env(fam.tasks[0])
    env.set_task(fam.tasks[1])
    clone = pickle.loads(pickle.dumps(env))
    assert clone.task == fam.tasks[1]
    a = _actions(fam, 3)
    np.testing.assert_allclose(_rollout(clone, a)[1], _rollout(env, a)[1])


def test_horizon_option_is_saved_in_the_card():
    fam = make_family("cheetah-vel", num_tasks=2, horizon=5)
    assert fam.horizon == 5 and type(fam).horizon == 200
    again = family_from_card(json.loads(json.dumps(fam.to_json())))
    assert again.horizon == 5
    venv = again.make_vector_env()
    venv.reset(seed=0)
    truncs = [venv.step(np.zeros((2, 6)))[3].all() for _ in range(5)]
    assert truncs == [False] * 4 + [True]
    with pytest.raises(ValueError, match="horizon"):
        make_family("point-robot", horizon=0)
