"""One command to check metadt on a machine with one CUDA GPU (<= 8 minutes).

    python benches/gpu_check.py [--json gpu_check.json] [--data DATASET]

Sections, each a row group of the printed table and a key of the JSON:

1. ``correctness``: the Triton kernels on the device against references:
   attention forward and backward (float32, bfloat16, float16; odd T, left
   padding, rows with no visible key, causal and not) against the explicit
   float32 softmax (``attention_reference``); ``best_segments`` (the device
   prompt scorer) against the Rust store's ``best_segments`` on the same errors
   (ties, short episodes, padding, empty rows, per episode and per task,
   float32 and bfloat16 errors).
2. ``attention_speed``: the Triton attention against the PyTorch path
   (``scaled_dot_product_attention``) at the model's shapes (paper preset:
   batch 128, width 128, 1 head, (K + k)·3 = 75 tokens; Hopper/Walker 33 tokens;
   ×3 layers per step) and at longer sequences, forward and forward+backward,
   float32 and bfloat16.
3. ``scoring_speed``: prompt scoring of 4500 episodes × 200 steps (45 tasks ×
   100, per episode and per task): Triton vs PyTorch on the device vs the Rust
   store on the host (the same errors; the device-to-host copy timed apart).
4. ``profile``: ``metadt profile`` of the paper-preset Meta-DT step (Rust
   sampler and prefetch): steps/s and the share of data loading (sampling +
   host-to-device copy).
5. ``train``: a short paper-preset Meta-DT training run on point-robot (both
   phases: without and with the prompt): steps/s and peak device memory.

Sections 4-5 use ``--data`` (a point-robot dataset) or else a synthetic one of
the paper's size written to a temporary directory (45 + 5 goals, 100 scripted
episodes per task of 20 steps: the step's cost does not depend on the data's
quality), and an untrained world model of the paper's size.

Without CUDA the same checks run under Triton's CPU interpreter on tiny shapes
(the script restarts itself with ``TRITON_INTERPRET=1 METADT_KERNELS=triton``)
in about a minute; its timings are NOT GPU timings and say so. The exit code
is 1 if any correctness check fails, 0 otherwise. tests/test_gpu_check.py runs
the CPU mode, so the script cannot rot.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import metadt.kernels as K
from metadt.fileio import atomic_write_json
from metadt.kernels.attention import attention_reference

# --------------------------------------------------------------------- helpers


@contextmanager
def forced(mode: str):
    """Force the kernels' dispatch point to one path for a block."""
    old = os.environ.get(K.ENV_VAR)
    os.environ[K.ENV_VAR] = mode
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(K.ENV_VAR, None)
        else:
            os.environ[K.ENV_VAR] = old


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, dev: torch.device, reps: int, warmup: int = 2) -> float:
    """Milliseconds per call (CUDA events on a GPU, wall clock on the CPU)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    if dev.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) * 1e3 / reps


class Report:
    """Rows of the printed table and the JSON document."""

    def __init__(self, mode: str, dev: torch.device):
        self.doc: dict = {"schema": "metadt-gpu-check/1", "mode": mode, "device": str(dev),
                          "gpu_timings": mode == "gpu", "correctness": [],
                          "attention_speed": [], "scoring_speed": [], "profile": None,
                          "train": None, "sections_s": {}}
        self.rows: list[tuple[str, str, str, str]] = []

    def row(self, section: str, name: str, result: str, detail: str = "") -> None:
        self.rows.append((section, name, result, detail))
        print(f"  {section:<11} {name:<52} {result:<10} {detail}", flush=True)

    def check(self, name: str, ok: bool, detail: str, **fig) -> None:
        self.doc["correctness"].append({"name": name, "ok": bool(ok), "detail": detail, **fig})
        self.row("correct", name, "ok" if ok else "FAIL", detail)

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.doc["correctness"])

    def table(self) -> str:
        w = [max(len(r[i]) for r in self.rows + [("section", "check", "result", "detail")])
             for i in range(4)]
        line = lambda r: "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |"  # noqa: E731
        out = [line(("section", "check", "result", "detail")),
               "|" + "|".join("-" * (x + 2) for x in w) + "|"]
        return "\n".join(out + [line(r) for r in self.rows])


# ----------------------------------------------------------------- correctness
ATT_TOL = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _fp32_tol(dev: torch.device) -> float:
    if dev.type != "cuda":
        return ATT_TOL[torch.float32]
    from metadt.kernels._attention_triton import _tf32_allowed

    return 5e-3 if _tf32_allowed() else 1e-4  # TF32 products: 10-bit mantissa


def check_attention(rep: Report, dev: torch.device, shapes, dtypes) -> None:
    for (b, h, t, d), causal in shapes:
        for dtype in dtypes:
            tol = _fp32_tol(dev) if dtype == torch.float32 else ATT_TOL[dtype]
            g = torch.Generator().manual_seed(t * 1000 + d)
            q, k, v = (torch.randn(b, h, t, d, generator=g).to(dev, dtype).requires_grad_()
                       for _ in range(3))
            go = torch.randn(b, h, t, d, generator=g).to(dev, dtype)
            lengths = torch.tensor([t, max(t - 3, 0)] + [0] * (b - 2))[:b]
            kpm = (torch.arange(t)[None, :] >= (t - lengths)[:, None]).to(dev)
            name = f"attention B{b} H{h} T{t} D{d} {str(dtype)[6:]}{' causal' if causal else ''}"
            try:
                with forced("triton"):
                    out = K.attention(q, k, v, kpm, causal=causal)
                    grads = torch.autograd.grad(out, (q, k, v), go)
                ref = attention_reference(q, k, v, kpm, causal=causal)
                refs = torch.autograd.grad(ref, (q, k, v), go.float())
                errs = [((a.float() - r) .abs() - tol * r.abs()).max().item()
                        for a, r in zip((out, *grads), (ref, *refs))]
                worst = max(errs)
                finite = all(torch.isfinite(x).all().item() for x in (out, *grads))
                # a row that sees no key (left padding under the causal mask, an
                # all-padding sequence) is exactly 0, never NaN
                empty = out[2].abs().max().item() == 0.0 if b > 2 else True
                ok = finite and empty and worst <= tol
                rep.check(name + " fwd+bwd", ok,
                          f"max excess |err|-rtol|ref| {worst:.2e} (tol {tol:g}), "
                          f"empty rows zero: {empty}", tol=tol, max_excess=worst)
            except Exception as exc:  # report and go on
                rep.check(name + " fwd+bwd", False, f"{type(exc).__name__}: {exc}")


def _errors_case(n: int, t: int, seed: int, integer: bool, groups: int):
    g = torch.Generator().manual_seed(seed)
    if integer:  # exact sums: exact ties
        errors = torch.randint(0, 3, (n, t), generator=g).float()
    else:
        errors = torch.rand(n, t, generator=g) * 5
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    task = torch.randint(0, groups, (n,), generator=g)
    if n > 3:
        lengths[0], lengths[3] = t, 0  # a full row, an empty row
        task[3] = groups + 1  # a task whose only row is empty
    errors = errors.masked_fill(torch.arange(t)[None, :] >= lengths[:, None], float("nan"))
    return errors, lengths, task


def check_scoring(rep: Report, dev: torch.device, cases) -> None:
    from metadt.train.device_scoring import host_best_segments

    for n, t, k, start_min in cases:
        for integer in (False, True):
            errors, lengths, task = _errors_case(n, t, n + t + k, integer, groups=max(n // 8, 2))
            for per, dtype in (("episode", torch.float32), ("task", torch.float32),
                               ("task", torch.bfloat16)):
                groups = task if per == "task" else None
                name = (f"best_segments N{n} T{t} k{k} start{start_min} per {per}"
                        f"{' ties' if integer else ''} {str(dtype)[6:]}")
                e = errors.to(dtype)  # both sides see the same values
                try:
                    with forced("triton"):
                        res = K.best_segments(e.to(dev), lengths.to(dev), k,
                                              start_min, None if groups is None else groups.to(dev))
                    want = host_best_segments(e.float().numpy(), lengths.numpy(), length=k,
                                              start_min=start_min,
                                              groups=None if groups is None else groups.numpy())
                    found = res.episode.cpu().numpy() >= 0
                    got = [x.cpu().numpy()[found] for x in res]
                    ok = (all(np.array_equal(a, want[key]) for a, key in
                              zip(got, ("keys", "episodes", "starts", "scores"))))
                    rep.check(name, ok, f"{int(found.sum())} segments, identical to the Rust "
                              f"store: {ok}")
                except Exception as exc:
                    rep.check(name, False, f"{type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------- speed
def attention_speed(rep: Report, dev: torch.device, shapes, dtypes, reps: int) -> None:
    for label, (b, h, t, d) in shapes:
        for dtype in dtypes:
            for backward in (False, True):
                g = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(b, h, t, d, generator=g).to(dev, dtype)
                           .requires_grad_(backward) for _ in range(3))
                lengths = torch.randint(t // 3, t + 1, (b,), generator=g)
                kpm = (torch.arange(t)[None, :] >= (t - lengths)[:, None]).to(dev)
                go = torch.randn(b, h, t, d, generator=g).to(dev, dtype)

                def run():
                    out = K.attention(q, k, v, kpm, causal=True, dropout_p=0.1,
                                      training=backward)
                    if backward:
                        torch.autograd.grad(out, (q, k, v), go)
                times = {}
                for mode in ("torch", "triton"):
                    with forced(mode):
                        times[mode] = time_ms(run, dev, reps)
                tag = "fwd+bwd" if backward else "fwd"
                name = f"{label} B{b} H{h} T{t} D{d} {str(dtype)[6:]} {tag}"
                rec = {"name": name, "shape": [b, h, t, d], "dtype": str(dtype)[6:],
                       "backward": backward, "triton_ms": times["triton"],
                       "sdpa_ms": times["torch"], "speedup": times["torch"] / times["triton"]}
                rep.doc["attention_speed"].append(rec)
                rep.row("attention", name, f"x{rec['speedup']:.3g}",
                        f"triton {times['triton']:.3f} ms, sdpa {times['torch']:.3f} ms")


def scoring_speed(rep: Report, dev: torch.device, n: int, t: int, tasks: int, reps: int) -> None:
    from metadt.train.device_scoring import errors_store, host_best_segments

    g = torch.Generator().manual_seed(0)
    errors = torch.rand(n, t, generator=g).to(dev)
    lengths = torch.randint(t // 2, t + 1, (n,), generator=g).to(dev)
    groups = (torch.arange(n) % tasks).to(dev)
    for per, grp in (("episode", None), ("task", groups)):
        times = {}
        for mode in ("torch", "triton"):
            with forced(mode):
                times[mode] = time_ms(lambda: K.best_segments(errors, lengths, 5, 4, grp), dev,
                                      reps)
        copy_ms = time_ms(lambda: errors.cpu(), dev, reps)
        e_np, l_np = errors.cpu().numpy(), lengths.cpu().numpy()
        g_np = None if grp is None else grp.cpu().numpy()
        store, _rows = errors_store(e_np, l_np, g_np)
        host_reps = max(1, reps // 5)
        t0 = time.perf_counter()
        for _ in range(host_reps):
            store.best_segments("err", length=5, start_min=4, per="task", mode="argmax")
        rust_ms = (time.perf_counter() - t0) * 1e3 / host_reps
        t0 = time.perf_counter()
        host_best_segments(e_np, l_np, length=5, start_min=4, groups=g_np)
        build_ms = (time.perf_counter() - t0) * 1e3
        name = f"best_segments N{n} T{t} k5 per {per}"
        rec = {"name": name, "triton_ms": times["triton"], "torch_ms": times["torch"],
               "rust_ms": rust_ms, "rust_ms_incl_store_build": build_ms,
               "device_to_host_copy_ms": copy_ms}
        rep.doc["scoring_speed"].append(rec)
        rep.row("scoring", name, f"{times['triton']:.3f} ms",
                f"torch {times['torch']:.3f} ms, Rust (host) {rust_ms:.2f} ms "
                f"({build_ms:.1f} ms with building the store), copy to host {copy_ms:.3f} ms")


# -------------------------------------------------------- profile and training
def synthetic_point_dataset(path: Path, num_train: int, num_test: int, episodes: int,
                            seed: int = 0) -> Path:
    """A point-robot dataset of scripted episodes (move to the goal, Gaussian action
    noise): the paper's sizes without collecting with SAC."""
    from metadt import TrajectoryStore
    from metadt.data.dataset import DatasetCard, write_dataset

    rng = np.random.default_rng(seed)
    goals = rng.uniform(-1, 1, size=(num_train + num_test, 2))
    horizon, bound = 20, 0.1
    stores = {}
    for quality, noise in (("medium", 0.06), ("expert", 0.01)):
        st = TrajectoryStore(2, 2)
        for task, goal in enumerate(goals):
            s = np.zeros((episodes, 2))
            obs, act, rew, nxt = [], [], [], []
            for _ in range(horizon):
                a = np.clip(np.clip(goal - s, -bound, bound)
                            + noise * rng.standard_normal(s.shape), -bound, bound)
                s2 = s + a
                obs.append(s), act.append(a), nxt.append(s2)
                rew.append(-np.linalg.norm(s2 - goal, axis=1))
                s = s2
            o, a_, r, n2 = (np.stack(x, 1).astype(np.float32) for x in (obs, act, rew, nxt))
            for e in range(episodes):
                st.add_episode(o[e], a_[e], r[e], n2[e], task=task)
        stores[quality] = st
    card = DatasetCard(family="point-robot", family_seed=seed, obs_dim=2, act_dim=2,
                       horizon=horizon,
                       tasks=[{"family": "point-robot", "goal": [float(x), float(y)]}
                              for x, y in goals],
                       train_ids=list(range(num_train)),
                       test_ids=list(range(num_train, num_train + num_test)))
    write_dataset(path, card, stores)
    return path


def paper_config(dev: torch.device, small: bool, **over):
    from metadt.config.meta_dt import MetaDTConfig

    cfg = MetaDTConfig.for_family("point-robot", "paper").replace(device=dev.type, **over)
    if small:  # the interpreter: the paper's architecture, a tiny batch
        cfg = cfg.replace(batch_size=2, num_threads=1, column_batch_size=1024)
    return cfg.validate()


def profile_section(rep: Report, dev: torch.device, data: Path, small: bool) -> None:
    from metadt.profile.step import profile_meta_dt
    from metadt.profile.table import format_table

    cfg = paper_config(dev, small)
    steps, warmup = (1, 1) if small else (100, 10)
    modes = ("sampler",) if small else ("sampler", "prefetch")
    doc = profile_meta_dt(data, cfg, None, steps=steps, warmup=warmup, modes=modes,
                          block=steps if small else 10)
    out = {"steps": steps, "batch_size": cfg.batch_size, "amp": cfg.amp,
           "prepare_s": doc["prepare_s"], "modes": []}
    for m in doc["modes"]:
        load = m["phases"]["sample"]["share"] + m["phases"]["h2d"]["share"]
        out["modes"].append({"mode": m["mode"], "steps_per_s": m["steps_per_s"],
                             "data_loading_share": load,
                             "ms_per_step": 1e3 * m["wall_s"] / max(m["steps"], 1)})
        rep.row("profile", f"Meta-DT paper step ({m['label']}, batch {cfg.batch_size})",
                f"{m['steps_per_s']:.1f}/s",
                f"data loading (sampling + copy) {100 * load:.1f}% of the step")
    out["table"] = format_table(doc)
    rep.doc["profile"] = out


def train_section(rep: Report, dev: torch.device, data: Path, small: bool, steps: int) -> None:
    from metadt.profile.step import untrained_world_model
    from metadt.train.meta_dt import train_meta_dt

    cfg = paper_config(dev, small, num_steps=steps, warm_train=steps // 2,
                       warmup_steps=max(steps // 4, 1), log_every=max(steps // 4, 1),
                       checkpoint_every=steps)
    wm = untrained_world_model("point-robot", "paper", 2, 2)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = train_meta_dt(data, cfg, Path(tmp) / "run", wm, progress=False)
        total = time.perf_counter() - t0
    losses = np.asarray(summary["losses"], dtype=np.float64)
    if dev.type == "cuda":
        mem, mem_kind = torch.cuda.max_memory_allocated() / 2**20, "peak CUDA memory allocated"
    else:
        import resource

        mem, mem_kind = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                         "peak host RSS of this process")
    rec = {"steps": steps, "batch_size": cfg.batch_size, "amp": cfg.amp,
           "steps_per_s": summary["steps_per_s"], "train_time_s": summary["train_time_s"],
           "total_s": total, "time_error_column_s": summary.get("time_error_column_s"),
           "memory_mib": mem, "memory_kind": mem_kind,
           "loss_first": float(losses[0]), "loss_last": float(losses[-1]),
           "losses_finite": bool(np.isfinite(losses).all())}
    rep.doc["train"] = rec
    rep.row("train", f"paper preset point-robot, {steps} steps (batch {cfg.batch_size})",
            f"{rec['steps_per_s']:.1f}/s",
            f"{mem_kind} {mem:.0f} MiB, loss {rec['loss_first']:.3f} -> {rec['loss_last']:.3f}")
    rep.check("training losses finite", rec["losses_finite"], f"{steps} steps")


# ------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--json", metavar="PATH", default="gpu_check.json",
                    help="where to write the figures (default: gpu_check.json)")
    ap.add_argument("--data", metavar="DATASET", default=None,
                    help="a point-robot dataset for the profile and the training run "
                         "(default: a synthetic one of the paper's size, or tiny on the CPU)")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="steps of the training run (default: 400 on a GPU, 2 on the CPU)")
    ap.add_argument("--skip", action="append", default=[],
                    choices=("correctness", "attention", "scoring", "profile", "train"),
                    help="leave out a section (repeatable)")
    args = ap.parse_args(argv)

    gpu = torch.cuda.is_available()
    if not gpu and os.environ.get("TRITON_INTERPRET") != "1":
        # The interpreter must be on before triton is imported: restart with it.
        env = dict(os.environ, TRITON_INTERPRET="1", **{K.ENV_VAR: "triton"})
        return subprocess.call([sys.executable, str(Path(__file__).resolve()),
                                *(argv if argv is not None else sys.argv[1:])], env=env)
    dev = torch.device("cuda" if gpu else "cpu")
    mode = "gpu" if gpu else "interpreter"
    if not gpu:
        torch.set_num_threads(1)
    rep = Report(mode, dev)
    t_start = time.perf_counter()
    head = (f"gpu_check: {torch.cuda.get_device_name()}" if gpu else
            "gpu_check: no CUDA device: Triton's CPU interpreter on tiny shapes. "
            "Timings below are NOT GPU timings (interpreter / CPU, for the record only).")
    print(head)
    rep.doc.update(torch_version=torch.__version__, triton_available=K.triton_available(),
                   tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
                   device_name=torch.cuda.get_device_name() if gpu else "cpu (interpreter)")
    small = not gpu

    def section(name, fn):
        if name in args.skip:
            return
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # one broken section does not hide the others
            rep.check(f"{name} section ran", False, f"{type(exc).__name__}: {exc}")
        rep.doc["sections_s"][name] = time.perf_counter() - t0

    if small:
        att_shapes = [((3, 2, 7, 16), True), ((3, 1, 1, 16), True), ((3, 1, 13, 32), False)]
        dtypes = (torch.float32, torch.bfloat16)
        score_cases = [(9, 12, 3, 2), (0, 10, 3, 0), (6, 4, 5, 0)]
        speed_shapes = [("tiny", (2, 1, 15, 16))]
        reps, n_eps, n_t, n_tasks = 1, 20, 30, 4
    else:
        att_shapes = [((3, 2, 1, 16), True), ((3, 2, 7, 32), True), ((5, 1, 75, 128), True),
                      ((5, 1, 75, 128), False), ((4, 2, 33, 64), True), ((3, 4, 200, 32), True),
                      ((3, 1, 130, 256), True)]
        dtypes = (torch.float32, torch.bfloat16, torch.float16)
        score_cases = [(9, 12, 3, 2), (0, 10, 3, 0), (6, 4, 5, 0), (300, 200, 5, 4),
                       (60, 500, 5, 4), (45, 20, 5, 4)]
        speed_shapes = [("paper K=20 k=5", (128, 1, 75, 128)),
                        ("Hopper/Walker K=8 k=3", (128, 1, 33, 128)),
                        ("long", (16, 4, 1024, 32)), ("long", (4, 4, 4096, 64))]
        reps, n_eps, n_t, n_tasks = 30, 4500, 200, 45

    section("correctness", lambda: (check_attention(rep, dev, att_shapes, dtypes),
                                    check_scoring(rep, dev, score_cases)))
    section("attention", lambda: attention_speed(rep, dev, speed_shapes,
                                                 (torch.float32, torch.bfloat16), reps))
    section("scoring", lambda: scoring_speed(rep, dev, n_eps, n_t, n_tasks, reps))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else None
        if data is None and not {"profile", "train"} <= set(args.skip):
            data = synthetic_point_dataset(Path(tmp) / "point-robot",
                                           *((4, 2, 3) if small else (45, 5, 100)))
        section("profile", lambda: profile_section(rep, dev, data, small))
        steps = args.train_steps or (2 if small else 400)
        section("train", lambda: train_section(rep, dev, data, small, steps))

    rep.doc["elapsed_s"] = time.perf_counter() - t_start
    rep.doc["ok"] = rep.ok
    print()
    print(rep.table())
    print()
    if not gpu:
        print("NOTE: interpreter mode: every timing above is NOT a GPU timing.")
    print(f"{sum(c['ok'] for c in rep.doc['correctness'])} of {len(rep.doc['correctness'])} "
          f"correctness checks passed; {rep.doc['elapsed_s']:.0f} s")
    atomic_write_json(args.json, rep.doc)
    print(f"figures: {args.json}")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
