"""`metadt profile`: phase accounting, the JSON schema, the trace, the comparison mode."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_train_support import make_point_dataset  # noqa: E402

from metadt.profile.table import SCHEMA, check_result, format_table, mode_dict  # noqa: E402
from metadt.profile.timer import (ALL_PHASES, PHASES, CudaTimer, PhaseStats, StepTimes,  # noqa: E402
                                  TraceHook, WallTimer)

GOALS = [(0.6, 0.2), (-0.4, 0.5), (0.3, -0.6), (-0.5, -0.3), (0.1, 0.8)]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small steps on a shared 2-core machine: one torch thread is faster and steadier."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("prof") / "ds"
    make_point_dataset(path, GOALS, num_train=4, episodes=6)
    return path


# ------------------------------------------------------------------ accounting
class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt


def test_wall_timer_parts_add_up_exactly():
    clock = FakeClock()
    timer = WallTimer(clock)
    durations = {"sample": 0.004, "h2d": 0.001, "z": 0.0005, "forward": 0.010,
                 "backward": 0.020, "optimizer": 0.003}
    for _ in range(3):
        timer.begin_step()
        for p in PHASES:
            clock.advance(durations[p])
            timer(p)
        clock.advance(0.0015)  # after the last mark: other
        st = timer.end_step()
        assert st.phases == pytest.approx(durations)
        assert st.other == pytest.approx(0.0015)
        assert sum(st.as_dict().values()) == pytest.approx(st.wall)
    totals = timer.stats.totals()
    assert set(totals) == set(ALL_PHASES)
    assert sum(totals.values()) == pytest.approx(timer.stats.wall)
    assert timer.stats.coverage() == pytest.approx(1 - 0.0015 / (sum(durations.values()) + 0.0015))
    with pytest.raises(ValueError):
        timer("nonsense")


class FakeEvent:
    """A CUDA event on a fake GPU timeline: fires at max(record time, GPU busy-until)."""

    def __init__(self, gpu):
        self.gpu = gpu
        self.t = None

    def record(self):
        self.t = max(self.gpu.clock(), self.gpu.busy_until)

    def elapsed_time(self, other):
        return 1e3 * (other.t - self.t)


class FakeGpu:
    def __init__(self, clock):
        self.clock, self.busy_until = clock, 0.0

    def launch(self, dt):  # asynchronous kernel: returns at once
        self.busy_until = max(self.clock(), self.busy_until) + dt

    def synchronize(self):
        self.clock.t = max(self.clock.t, self.busy_until)


def test_cuda_timer_uses_events_not_launch_time():
    clock = FakeClock()
    gpu = FakeGpu(clock)
    timer = CudaTimer(clock=clock, event_factory=lambda: FakeEvent(gpu), synchronize=gpu.synchronize)
    gpu_cost = {"h2d": 0.002, "z": 0.001, "forward": 0.030, "backward": 0.050, "optimizer": 0.005}
    timer.begin_step()
    clock.advance(0.004)  # host sampling
    timer("sample")
    for p in ("h2d", "z", "forward", "backward", "optimizer"):
        clock.advance(0.0001)  # launch overhead on the host
        gpu.launch(gpu_cost[p])
        timer(p)
    clock.advance(0.0002)  # host bookkeeping, then end_step synchronizes
    st = timer.end_step()
    assert st.phases["sample"] == pytest.approx(0.004)
    # device phases are GPU time (launch time is hidden: the GPU is the bottleneck)
    for p, c in gpu_cost.items():
        assert st.phases[p] == pytest.approx(c + (0.0001 if p == "h2d" else 0.0), abs=1e-9)
    assert st.wall == pytest.approx(0.004 + 0.0001 + sum(gpu_cost.values()))
    assert st.other == pytest.approx(0.0, abs=1e-9)
    assert sum(st.as_dict().values()) == pytest.approx(st.wall)


def test_table_and_schema_from_synthetic_stats():
    stats = PhaseStats()
    for k in range(4):
        stats.add(StepTimes({p: 0.001 * (i + 1) for i, p in enumerate(PHASES)}, 0.0215 + k * 1e-4))
    m = mode_dict("sampler", "Rust sampler", stats, 32, loader="rust", prefetch=False)
    assert sum(v["total_s"] for v in m["phases"].values()) == pytest.approx(m["wall_s"])
    assert sum(v["share"] for v in m["phases"].values()) == pytest.approx(1.0)
    assert m["samples_per_s"] == pytest.approx(32 * m["steps_per_s"])
    doc = {"schema": SCHEMA, "stage": "meta-dt", "device": "cpu", "timing": "wall-clock",
           "steps": 4, "batch_size": 32, "phases": list(ALL_PHASES), "modes": [m]}
    check_result(doc)
    text = format_table(doc)
    assert "batch sampling (Rust)" in text and "optimizer step" in text and "samples/s" in text
    bad = json.loads(json.dumps(doc))
    bad["modes"][0]["phases"]["other"]["total_s"] += 1.0
    with pytest.raises(ValueError):
        check_result(bad)


def test_make_timer_picks_wall_clock_on_cpu():
    from metadt.profile.timer import make_timer

    t = make_timer("cpu")
    assert isinstance(t, WallTimer) and t.timing == "wall-clock"
    assert CudaTimer.timing == "cuda-events"


def test_trace_hook_wraps_every_phase():
    seen = []
    hook = TraceHook(seen.append)
    hook.begin_step()
    for p in PHASES:
        hook(p)
    hook.end_step()
    assert seen == list(PHASES)
    assert hook._rf is None


# ------------------------------------------------------------------ NumPy gather
@pytest.mark.parametrize("strategy", ["argmax", "proportional", "random", "last"])
def test_numpy_windows_match_the_store_layout(dataset, strategy):
    from metadt.data.dataset import Dataset
    from metadt.profile.compare import NumpyWindows

    store = Dataset.open(dataset).store("medium", mmap=False)
    rng = np.random.default_rng(0)
    if "p_err" not in store.columns():
        store.attach_column("p_err", rng.random((store.num_steps, 1)).astype(np.float32))
        store.attach_column("p_z", rng.random((store.num_steps, 3)).astype(np.float32))
    kw = dict(window_len=5, context_len=3, return_scale=10.0, columns=("p_z",), tasks=[0, 1, 2, 3],
              prompt={"length": 3, "score": "p_err", "strategy": strategy, "start_min": 3})
    rust = store.sample_windows(32, seed=1, **kw)
    nw = NumpyWindows(store, 32, seed=0, **kw)
    ours = nw[7]
    assert list(ours) == list(rust)
    for k in rust:
        assert ours[k].shape == rust[k].shape and ours[k].dtype == rust[k].dtype, k
    c = nw.c
    # every sampled window is real data of its episode, ending at its last timestep
    end = c.offsets[ours["episodes"]] + ours["timesteps"][:, -1]
    np.testing.assert_allclose(ours["obs"][:, -1], c.obs[end])
    np.testing.assert_allclose(ours["rtg"][:, -1], c.rtg[end] / 10.0, rtol=1e-6)
    np.testing.assert_allclose(ours["p_z"][:, -1], store.column("p_z")[end])
    assert set(ours["tasks"]) <= {0, 1, 2, 3}
    assert (c.task_of_ep[ours["prompt_episodes"]] == ours["tasks"]).all()
    assert (ours["prompt_starts"] >= 3).all() and (ours["prompt_starts"] <= 20 - 3).all()
    if strategy == "argmax":  # the same segment as the store picks for that episode
        np.testing.assert_array_equal(nw._best[rust["prompt_episodes"]], rust["prompt_starts"])
    if strategy == "last":
        assert (ours["prompt_starts"] == 17).all()


def test_numpy_transitions_match_the_store_layout(dataset):
    from metadt.data.dataset import Dataset
    from metadt.profile.compare import NumpyTransitions

    store = Dataset.open(dataset).store("medium", mmap=False)
    rust = store.sample_transitions(16, context_len=4, tasks=[0, 1], seed=0)
    ours = NumpyTransitions(store, 16, context_len=4, tasks=[0, 1])[0]
    assert list(ours) == list(rust)
    for k in rust:
        assert ours[k].shape == rust[k].shape and ours[k].dtype == rust[k].dtype, k


# ------------------------------------------------------------------ end to end
def _check_doc(doc, modes):
    check_result(doc)
    assert [m["mode"] for m in doc["modes"]] == modes
    for m in doc["modes"]:
        parts = sum(m["phases"][p]["total_s"] for p in ALL_PHASES)
        assert parts == pytest.approx(m["wall_s"], rel=1e-9)  # with other: exact
        assert m["steps_per_s"] > 0 and m["samples_per_s"] > 0


def test_profile_meta_dt_all_modes_smoke(dataset):
    from metadt.config.meta_dt import MetaDTConfig
    from metadt.profile.step import profile_meta_dt

    cfg = MetaDTConfig.for_family("point-robot", "smoke").replace(quality="medium")
    doc = profile_meta_dt(dataset, cfg, steps=12, warmup=2,
                          modes=("sampler", "prefetch", "dataloader"))
    _check_doc(doc, ["sampler", "prefetch", "dataloader"])
    assert doc["stage"] == "meta-dt" and doc["prompt"] is True and doc["timing"] == "wall-clock"
    assert doc["batch_size"] == cfg.batch_size and doc["steps"] == 12
    for m in doc["modes"]:
        assert m["steps"] == 12
        for p in ("sample", "h2d", "forward", "backward", "optimizer"):
            assert m["phases"][p]["total_s"] > 0, (m["mode"], p)
    # the named phases cover the step's wall time (within 5%): only the loss
    # read-back and the timer's own calls fall in "other"
    best = max(m["measured_share"] for m in doc["modes"])
    assert best >= 0.95, [m["measured_share"] for m in doc["modes"]]


def test_profile_world_model_smoke(dataset):
    from metadt.config.world_model import WorldModelConfig
    from metadt.profile.step import profile_world_model

    cfg = WorldModelConfig.for_family("point-robot", "smoke").replace(quality="medium")
    doc = profile_world_model(dataset, cfg, steps=8, warmup=1,
                              modes=("sampler", "prefetch", "dataloader"))
    _check_doc(doc, ["sampler", "prefetch", "dataloader"])
    assert doc["stage"] == "world-model"
    for m in doc["modes"]:
        assert m["phases"]["z"]["total_s"] == 0.0  # z is inside the world model's forward


def test_cli_json_trace_and_compare(dataset, tmp_path, capsys):
    from metadt.cli import main

    js, tr = tmp_path / "prof.json", tmp_path / "trace.json"
    rc = main(["profile", "--data", str(dataset), "--preset", "smoke", "--quality", "medium",
               "--steps", "6", "--warmup", "1", "--compare", "--json", str(js),
               "--trace", str(tr), "--trace-steps", "2"])
    assert rc == 0
    out = capsys.readouterr().out
    for label in ("batch sampling", "host-to-device copy", "z computation", "forward",
                  "backward", "optimizer step", "other", "steps/s", "samples/s",
                  "Rust sampler", "Rust prefetch", "DataLoader+NumPy"):
        assert label in out, label
    doc = json.loads(js.read_text())
    _check_doc(doc, ["sampler", "prefetch", "dataloader"])
    assert doc["schema"] == SCHEMA and doc["trace"] == str(tr)
    trace = json.loads(tr.read_text())
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e.get("name") for e in events}
    for p in PHASES:
        assert f"metadt/{p}" in names, p
    assert any(str(n).startswith("metadt/step") for n in names)


def test_cli_world_model_stage(dataset, tmp_path, capsys):
    from metadt.cli import main

    js = tmp_path / "wm.json"
    rc = main(["profile", "--data", str(dataset), "--stage", "world-model", "--preset", "smoke",
               "--quality", "medium", "--steps", "4", "--warmup", "1", "--no-prefetch",
               "--json", str(js)])
    assert rc == 0
    doc = json.loads(js.read_text())
    _check_doc(doc, ["sampler"])
    assert "z computation (in forward)" in capsys.readouterr().out


@pytest.mark.parametrize("anchor", ["start", "end"])
def test_numpy_windows_follow_the_window_rule(dataset, anchor):
    """NumpyWindows (the DataLoader comparison) cuts windows like the store: checked
    sample by sample against the NumPy reference of tests/store_reference.py."""
    import store_reference as ref
    from metadt.data.dataset import Dataset
    from metadt.profile.compare import NumpyWindows

    store = Dataset.open(dataset).store("medium", mmap=False)
    K, h = 8, 3
    b = NumpyWindows(store, 64, window_len=K, context_len=h, return_scale=10.0, seed=3, anchor=anchor)[0]
    c = NumpyWindows(store, 1, anchor=anchor).c
    for i in range(64):
        e = int(b["episodes"][i])
        o, T = int(c.offsets[e]), int(c.lengths[e])
        ep = ref.Episode(c.obs[o:o + T], c.actions[o:o + T], c.rewards[o:o + T], task=int(b["tasks"][i]))
        n = int(b["mask"][i].sum())
        t0, end = int(b["timesteps"][i, K - n]), int(b["timesteps"][i, -1])
        assert ref.window_steps(T, end if anchor == "end" else t0, K, anchor) == (t0, end)
        for key, val in ref.window(ep, end, K, h, 10.0, start=t0).items():
            np.testing.assert_allclose(b[key][i], val, rtol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="anchor"):
        NumpyWindows(store, 4, anchor="middle")
