"""Rollouts of a sequence policy: all tasks stepped together, batched through the model.

One call steps one vector env holding every (task, episode) pair of the
call for the family's full horizon (no early termination, protocol section
1). Every env is a stream of a small `TrajectoryStore`; at every step the
store builds the policy input of all envs (`live_windows`: the
`sample_windows` layout, see `metadt.evaluate.history`) and the policy
predicts the action of the last window position for all envs at once.

The policy is anything with ``predict_action(batch, world_model=None) ->
[N, act_dim]`` taking torch tensors (`metadt.models.MetaDT`); the world
model, when given, lets the policy compute z online from the ``ctx_*``
arrays (the agent's own last h transitions, left-padded).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from metadt.evaluate.history import Prompt, record_steps, to_torch
from metadt.seeding import ACTION_NOISE_KEY, RANDOM_POLICY_KEY, keyed_rng


@dataclass
class Trajectories:
    """Episodes from one rollout call, one row per env."""

    tasks: np.ndarray      # [N] task ids (indices into the family's tasks)
    obs: np.ndarray        # [N, T, obs] s_t
    actions: np.ndarray    # [N, T, act] (clipped, as applied)
    rewards: np.ndarray    # [N, T]
    next_obs: np.ndarray   # [N, T, obs] s_{t+1}
    targets: np.ndarray    # [N] target returns (raw)
    success: np.ndarray | None = None  # [N] bool: success at any step (Meta-World)

    @property
    def returns(self) -> np.ndarray:
        return self.rewards.sum(axis=1)

    @property
    def num(self) -> int:
        return int(self.tasks.shape[0])

    @classmethod
    def concat(cls, parts: Sequence["Trajectories"]) -> "Trajectories":
        """Rows of several rollout calls as one (same horizon and spaces)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        succ = [p.success for p in parts]
        return cls(
            tasks=np.concatenate([p.tasks for p in parts]),
            obs=np.concatenate([p.obs for p in parts]),
            actions=np.concatenate([p.actions for p in parts]),
            rewards=np.concatenate([p.rewards for p in parts]),
            next_obs=np.concatenate([p.next_obs for p in parts]),
            targets=np.concatenate([p.targets for p in parts]),
            success=None if any(x is None for x in succ) else np.concatenate(succ),
        )

    def best_per_task(self) -> dict[int, int]:
        """Row of the best episode (by return; the first on ties) of each task."""
        best: dict[int, int] = {}
        ret = self.returns
        for i, task in enumerate(self.tasks.tolist()):
            if task not in best or ret[i] > ret[best[task]]:
                best[task] = i
        return best


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def rollout(policy: Any, family: Any, task_ids: Sequence[int], *,
            target_returns: Sequence[float] | np.ndarray, window_len: int, context_len: int,
            return_scale: float, world_model: Any = None, prompt: Prompt | None = None,
            seed: int | None = None, device: Any = "cpu", action_noise: float = 0.0,
            z_from: Sequence[int] | np.ndarray | None = None,
            on_step: Callable[[int, int], None] | None = None) -> Trajectories:
    """Run one episode per entry of `task_ids` (repeat an id for several episodes).

    `target_returns` [N] are raw returns (the rtg fed to the model is divided
    by `return_scale`). `prompt`, if given, has one row per env and is fixed
    for the episode. `action_noise` > 0 adds Gaussian exploration noise of
    standard deviation ``action_noise x (high - low) / 2`` to every predicted
    action before clipping (drawn from `seed`; the clipped, applied action is
    what the history and the returned trajectories hold). `z_from` [N] (the
    z-shuffle diagnostic) gives env i the z the world model computes from env
    ``z_from[i]``'s context at the same step, everything else of its batch
    unchanged (the policy must offer ``compute_z(batch, world_model)``).
    `on_step(t, horizon)` is called after every step.
    """
    import torch

    task_ids = np.asarray(task_ids, dtype=np.int64)
    n = int(task_ids.shape[0])
    if n == 0:
        raise ValueError("rollout needs at least one task")
    targets = np.asarray(target_returns, dtype=np.float64).reshape(n)
    tasks = [family.tasks[int(i)] for i in task_ids]
    horizon = int(family.horizon)
    low = np.asarray(family.action_low, dtype=np.float64)
    high = np.asarray(family.action_high, dtype=np.float64)
    if action_noise < 0 or not np.isfinite(action_noise):
        raise ValueError(f"action_noise must be a finite number >= 0, got {action_noise}")
    noise_std = float(action_noise) * (high - low) / 2.0
    perm = None
    if z_from is not None:
        perm = np.asarray(z_from, dtype=np.int64).reshape(-1)
        if perm.shape != (n,) or perm.min() < 0 or perm.max() >= n:
            raise ValueError(f"z_from must hold {n} env indices in [0, {n}), got {perm.tolist()}")
        if world_model is None:
            raise ValueError("z_from (z shuffled) needs the world model that computes z")
    noise_rng = keyed_rng(seed, ACTION_NOISE_KEY)
    from metadt.data.store import TrajectoryStore

    if prompt is not None and prompt.num != n:
        raise ValueError(f"prompt has {prompt.num} rows for {n} envs")
    live = TrajectoryStore(family.obs_dim, family.act_dim)
    streams = np.arange(n, dtype=np.int64)
    all_obs = np.zeros((n, horizon + 1, family.obs_dim))
    all_actions = np.zeros((n, horizon, family.act_dim))
    all_rewards = np.zeros((n, horizon))
    env = family.make_vector_env(tasks, seed=seed)
    success = None
    try:
        obs, _ = env.reset(seed=seed)
        all_obs[:, 0] = np.asarray(obs, dtype=np.float64).reshape(n, family.obs_dim)
        if hasattr(policy, "eval"):
            policy.eval()
        with torch.inference_mode():
            for t in range(horizon):
                batch = live.live_windows(streams, all_obs[:, t], targets, task_ids,
                                          window_len=window_len, context_len=context_len,
                                          return_scale=return_scale)
                if prompt is not None:
                    batch.update(prompt.arrays())
                batch = to_torch(batch, device)
                if perm is not None:  # every env's own z, then handed to another env
                    batch["z"] = policy.compute_z(batch, world_model)[torch.as_tensor(perm)]
                action = _as_numpy(policy.predict_action(batch, world_model=world_model))
                if action.shape != (n, family.act_dim):
                    raise ValueError(f"policy returned actions of shape {action.shape}, "
                                     f"expected {(n, family.act_dim)}")
                if action_noise > 0:
                    action = action + noise_rng.normal(size=action.shape) * noise_std
                action = np.clip(action, low, high)
                obs, rew, _term, _trunc, infos = env.step(action)
                all_actions[:, t] = action
                all_rewards[:, t] = np.asarray(rew, dtype=np.float64).reshape(n)
                all_obs[:, t + 1] = np.asarray(obs, dtype=np.float64).reshape(n, family.obs_dim)
                record_steps(live, streams, task_ids, all_obs[:, t], all_actions[:, t],
                             all_rewards[:, t], all_obs[:, t + 1])
                if isinstance(infos, dict) and "success" in infos:
                    s = np.asarray(infos["success"], dtype=float).reshape(n) > 0
                    success = s if success is None else (success | s)
                if on_step is not None:
                    on_step(t + 1, horizon)
    finally:
        env.close()
    return Trajectories(
        tasks=task_ids,
        obs=all_obs[:, :horizon].copy(),
        actions=all_actions,
        rewards=all_rewards,
        next_obs=all_obs[:, 1:horizon + 1].copy(),
        targets=targets,
        success=success,
    )


def random_rollout(family: Any, task_ids: Sequence[int], *, seed: int) -> Trajectories:
    """One episode per entry of `task_ids` with uniformly random actions in the action box
    (undirected behaviour: the contexts the z probe is scored on)."""
    task_ids = np.asarray(task_ids, dtype=np.int64)
    n = int(task_ids.shape[0])
    if n == 0:
        raise ValueError("random_rollout needs at least one task")
    horizon = int(family.horizon)
    low = np.asarray(family.action_low, dtype=np.float64)
    high = np.asarray(family.action_high, dtype=np.float64)
    rng = keyed_rng(int(seed), RANDOM_POLICY_KEY)
    env = family.make_vector_env([family.tasks[int(i)] for i in task_ids], seed=seed)
    obs_l, act_l, rew_l = [], [], []
    try:
        obs, _ = env.reset(seed=seed)
        obs_l.append(np.asarray(obs, dtype=np.float64))
        for _ in range(horizon):
            a = rng.uniform(low, high, size=(n, low.shape[0]))
            obs, rew, _term, _trunc, _ = env.step(a)
            act_l.append(a)
            rew_l.append(np.asarray(rew, dtype=np.float64))
            obs_l.append(np.asarray(obs, dtype=np.float64))
    finally:
        env.close()
    allobs = np.stack(obs_l, 1)
    return Trajectories(tasks=task_ids, obs=allobs[:, :horizon], actions=np.stack(act_l, 1),
                        rewards=np.stack(rew_l, 1), next_obs=allobs[:, 1:horizon + 1],
                        targets=np.zeros(n))
