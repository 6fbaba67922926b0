"""Fixed score references (D4RL convention): one random and one expert return per family.

The per-dataset normalized score (random 0, the dataset's max 1) depends on each
user's own collection, so two users' numbers are not comparable. The fixed score
is ``100 * (return - random) / (expert - random)`` with the family's reference in
``references.json`` beside this module (shipped in the package): the mean return
over the family's task distribution (its ``family_seed`` 0 tasks, every task) of a
uniform-random policy and of the package's own expert (the final SAC checkpoint of
``metadt collect``, stochastic, as the expert dataset), measured once:

    metadt collect --family FAMILY --preset cpu --out data/FAMILY-cpu
    python -m metadt.evaluate.references data/FAMILY-cpu   # prints the entry

A family without an entry has no fixed score: the report says so and shows none
(no invented numbers).
"""
from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

REFERENCES_FILE = Path(__file__).with_name("references.json")


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    doc = json.loads(REFERENCES_FILE.read_text(encoding="utf-8"))
    if doc.get("format") != "metadt-score-references":
        raise ValueError(f"{REFERENCES_FILE}: not a metadt score-reference file")
    return doc["families"]


def reference(family: str) -> dict[str, Any] | None:
    """The fixed reference of ``family`` (``random``, ``expert``, how it was measured), or
    None when none has been measured."""
    ref = _table().get(family)
    return dict(ref) if ref is not None else None


def fixed_score(ret: float, ref: dict[str, Any] | None) -> float:
    """``100 * (ret - random) / (expert - random)``; NaN without a reference."""
    if ref is None:
        return float("nan")
    span = float(ref["expert"]) - float(ref["random"])
    if not math.isfinite(span) or abs(span) < 1e-12:
        return float("nan")
    return 100.0 * (float(ret) - float(ref["random"])) / span


def missing_families() -> list[str]:
    """The task families with no measured reference."""
    from metadt.envs.base import FAMILIES

    return [f for f in FAMILIES if f not in _table()]


def measure(dataset: str | Path) -> dict[str, Any]:
    """The reference entry of a `metadt collect` dataset: mean over every task of the card's
    uniform-random returns and of its expert quality's mean returns."""
    from metadt.data.dataset import Dataset

    card = Dataset.open(dataset).card
    n = len(card.tasks)
    rand = [card.random_return(i) for i in range(n)]
    exp = card.returns("expert")
    if any(r is None for r in rand) or len(exp) != n:
        raise ValueError(f"{dataset}: the card lacks random or expert returns for some task")
    col = card.collection or {}
    return {
        "random": sum(rand) / n,
        "expert": sum(float(exp[i]["mean"]) for i in range(n)) / n,
        "tasks": n, "family_seed": card.family_seed,
        "random_episodes_per_task": col.get("random_episodes"),
        "expert_episodes": int(sum(int(exp[i]["episodes"]) for i in range(n))),
        "measured_with": {"command": f"metadt collect --family {card.family} --preset "
                                     f"{col.get('preset')} --seed {col.get('seed')}",
                          "steps_per_task": (col.get("budget") or {}).get("steps_per_task"),
                          "metadt_version": col.get("metadt_version"),
                          "created": card.created},
    }


if __name__ == "__main__":  # python -m metadt.evaluate.references DATASET
    print(json.dumps(measure(sys.argv[1]), indent=2))
