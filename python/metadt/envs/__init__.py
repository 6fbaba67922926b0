"""Task families of Meta-DT (protocol section 1) on gymnasium, mujoco and metaworld.

    from metadt.envs import make_family
    fam = make_family("point-robot", seed=0)         # 45 train + 5 test tasks
    env = fam.make_env(fam.train_tasks[0])           # a gymnasium.Env
    env.set_task(fam.test_tasks[0])                  # switch without rebuilding
    venv = fam.make_vector_env(fam.train_tasks)      # one env per task, no autoreset
    card = fam.to_json()                             # saved with every dataset
    same = family_from_card(card)                    # rebuilt from it

Families: point-robot, cheetah-vel, cheetah-dir, ant-dir, hopper-param,
walker-param, reach, and the extra Meta-World ML1 families sweep and
door-lock. See docs/envs.md for each family's observation layout, reward,
physics and every deviation from the original code.
"""
from metadt.envs.base import (FAMILIES, Task, TaskFamily, family_class, family_from_card,
                              family_from_tasks, make_family)

__all__ = ["FAMILIES", "Task", "TaskFamily", "family_class", "family_from_card",
           "family_from_tasks", "make_family"]
