"""The store's fuzz campaign (tests/store_fuzz.py), run in a subprocess so a
crash or hang is a test failure. By default a fixed budget (ROUNDS: the same
examples on every machine, so the suite's verdict does not depend on the
machine's speed); METADT_FUZZ_SECONDS switches to a time budget (e.g. 1800 for
a long campaign)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SECONDS = os.environ.get("METADT_FUZZ_SECONDS")
ROUNDS = "20,12"   # rounds of 40 API / disk examples: ~20 s of CPU here


def test_fuzz_campaign_only_ordinary_exceptions(tmp_path):
    log = tmp_path / "calls.log"
    budget = ["--seconds", SECONDS] if SECONDS else ["--rounds", ROUNDS]
    cmd = [sys.executable, str(Path(__file__).with_name("store_fuzz.py")), *budget,
           "--seed", os.environ.get("METADT_FUZZ_SEED", "0"), "--log", str(log)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True,
                           timeout=2 * float(SECONDS) + 120 if SECONDS else 900)
    except subprocess.TimeoutExpired as e:   # a hang (e.g. a blocking open of a FIFO)
        last = log.read_text().splitlines()[-3:] if log.exists() else []
        raise AssertionError(f"the campaign hung; last calls: {last}") from e
    last = log.read_text().splitlines()[-3:] if log.exists() else []
    assert r.returncode == 0, (f"campaign failed with rc {r.returncode} (negative = killed by a signal); "
                               f"last calls: {last}\n{r.stderr[-6000:]}")
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    print(stats)
    # it really ran: many calls, both successes and errors, stores loaded from edited files
    assert stats["api_examples"] >= 50 and stats["calls"] >= 500, stats
    assert stats["examples"] > stats["api_examples"] and stats["loads"] >= 20, stats
    assert stats["ok"] >= 100 and stats["loads_ok"] >= 1, stats
    assert stats["errors"].get("ValueError", 0) >= 100, stats
