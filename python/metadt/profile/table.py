"""The profile's figures: the JSON document (:func:`result_dict`) and its table
(:func:`format_table`)."""
from __future__ import annotations

from typing import Any

from metadt.profile.timer import ALL_PHASES, OTHER, PHASE_LABELS, PHASES, PhaseStats, summarize

#: Version tag of the JSON document written by ``metadt profile --json``.
SCHEMA = "metadt-profile/1"


def mode_dict(name: str, label: str, stats: PhaseStats, batch_size: int,
              **extra: Any) -> dict[str, Any]:
    """Figures of one profiled mode (a list of step timings)."""
    n = stats.num_steps
    wall = stats.wall
    totals = stats.totals()
    phases = {}
    for p in ALL_PHASES:
        t = totals[p]
        phases[p] = {"label": PHASE_LABELS[p], "total_s": t,
                     "ms_per_step": 1e3 * t / n if n else 0.0,
                     "share": t / wall if wall > 0 else 0.0}
    step_ms = summarize(1e3 * s.wall for s in stats.steps)
    return {
        "mode": name, "label": label, **extra,
        "steps": n, "wall_s": wall,
        "step_ms": step_ms,
        "phases": phases,
        "measured_share": stats.coverage(),
        "steps_per_s": n / wall if wall > 0 else 0.0,
        "samples_per_s": n * batch_size / wall if wall > 0 else 0.0,
    }


def result_dict(meta: dict[str, Any], modes: list[dict[str, Any]],
                trace: str | None = None) -> dict[str, Any]:
    """The whole document: ``schema``, run description, ``phases`` (order), ``modes``."""
    return {"schema": SCHEMA, **meta, "phases": list(ALL_PHASES), "modes": modes, "trace": trace}


def check_result(doc: dict[str, Any]) -> None:
    """Raise ValueError if ``doc`` is not a well-formed profile document (used by tests
    and usable by scripts reading ``--json`` files)."""
    need = {"schema": str, "stage": str, "device": str, "timing": str, "steps": int,
            "batch_size": int, "phases": list, "modes": list}
    for k, t in need.items():
        if not isinstance(doc.get(k), t):
            raise ValueError(f"profile json: {k!r} missing or not {t.__name__}")
    if doc["schema"] != SCHEMA:
        raise ValueError(f"profile json: schema {doc['schema']!r} != {SCHEMA!r}")
    if doc["phases"] != list(ALL_PHASES):
        raise ValueError(f"profile json: phases {doc['phases']} != {list(ALL_PHASES)}")
    for m in doc["modes"]:
        for k in ("mode", "label", "steps", "wall_s", "phases", "steps_per_s", "samples_per_s",
                  "measured_share", "step_ms"):
            if k not in m:
                raise ValueError(f"profile json: mode lacks {k!r}")
        if set(m["phases"]) != set(ALL_PHASES):
            raise ValueError(f"profile json: mode {m['mode']!r} phases {sorted(m['phases'])}")
        total = sum(m["phases"][p]["total_s"] for p in ALL_PHASES)
        if abs(total - m["wall_s"]) > 1e-6 * max(1.0, m["wall_s"]):
            raise ValueError(f"profile json: mode {m['mode']!r} parts sum to {total} s, "
                             f"wall is {m['wall_s']} s")


def _fmt_ms(x: float) -> str:
    return f"{x:.3f}" if abs(x) < 10 else (f"{x:.2f}" if abs(x) < 100 else f"{x:.1f}")


def format_table(doc: dict[str, Any]) -> str:
    """A plain-text (Markdown-compatible) table: ms/step and share per phase and mode."""
    modes = doc["modes"]
    head = ["phase"]
    for m in modes:
        head += [f"{m['label']}: ms/step", "share"]
    rows = []
    for p in ALL_PHASES:
        label = PHASE_LABELS[p]
        if p == "sample":
            label += " (Rust)" if all(m.get("loader") == "rust" for m in modes) else ""
        if p == "z" and doc.get("stage") == "world-model":
            label += " (in forward)"
        r = [label]
        for m in modes:
            ph = m["phases"][p]
            r += [_fmt_ms(ph["ms_per_step"]), f"{100 * ph['share']:.1f}%"]
        rows.append(r)
    r = ["**total (wall)**"]
    for m in modes:
        r += [f"**{_fmt_ms(1e3 * m['wall_s'] / max(m['steps'], 1))}**", "100%"]
    rows.append(r)
    r = ["step median / p90 (ms)"]
    for m in modes:
        r += [f"{_fmt_ms(m['step_ms']['median'])} / {_fmt_ms(m['step_ms']['p90'])}", ""]
    rows.append(r)
    r = ["steps/s"]
    for m in modes:
        r += [f"{m['steps_per_s']:.1f}", ""]
    rows.append(r)
    r = ["samples/s"]
    for m in modes:
        r += [f"{m['samples_per_s']:,.0f}", ""]
    rows.append(r)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths)):
            out.append(str(c).ljust(w) if i == 0 else str(c).rjust(w))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in rows])


def describe(doc: dict[str, Any]) -> str:
    """One line saying what was profiled."""
    bits = [doc.get("stage", "?")]
    if doc.get("method") and doc.get("stage") == "meta-dt":
        bits[0] = doc["method"]
    return (f"{bits[0]} on {doc.get('family', '?')} ({doc.get('quality', '?')}), "
            f"preset {doc.get('preset', '?')}, batch {doc['batch_size']}, device {doc['device']}"
            f" ({doc['timing']}), {doc['steps']} steps after {doc.get('warmup_steps', 0)} "
            f"warm-up, torch threads {doc.get('torch_threads', '?')}"
            + (f"; once before training: z/error columns {doc['prepare_s']:.2f} s"
               if doc.get("prepare_s") is not None else ""))


def advice(doc: dict[str, Any]) -> list[str]:
    """Plain-language reading of the figures: what the step waits for, what to change."""
    out: list[str] = []
    modes = {m["mode"]: m for m in doc["modes"]}
    base = modes.get("sampler")
    pre = modes.get("prefetch")
    ref = base or pre or (doc["modes"][0] if doc["modes"] else None)
    if ref is None:
        return out
    ph = ref["phases"]
    data = ph["sample"]["share"] + ph["h2d"]["share"]
    compute = sum(ph[p]["share"] for p in ("z", "forward", "backward", "optimizer"))
    out.append(f"{ref['label']}: {100 * data:.0f}% of a step waits for data "
               f"(sampling + copy), {100 * compute:.0f}% is model compute "
               f"(z, forward, backward, optimizer), {100 * ph[OTHER]['share']:.0f}% other.")
    if base and pre and base["steps_per_s"] > 0:
        gain = pre["steps_per_s"] / base["steps_per_s"] - 1.0
        b_ms, p_ms = (base["phases"]["sample"]["ms_per_step"], pre["phases"]["sample"]["ms_per_step"])
        out.append(f"prefetching (store.prefetch): the step waits {_fmt_ms(p_ms)} ms for its batch "
                   f"instead of sampling for {_fmt_ms(b_ms)} ms; steps/s {100 * gain:+.0f}% "
                   "(differences within a few % are noise).")
    dl = modes.get("dataloader")
    if dl and base:
        d_ms, b_ms = dl["phases"]["sample"]["ms_per_step"], base["phases"]["sample"]["ms_per_step"]
        ratio = d_ms / b_ms if b_ms > 0 else float("inf")
        out.append(f"DataLoader over a NumPy gather ({dl.get('workers', 0)} workers): "
                   f"{_fmt_ms(d_ms)} ms/step for the batch vs {_fmt_ms(b_ms)} ms with the Rust "
                   f"sampler ({ratio:.1f}x); steps/s {dl['steps_per_s']:.1f} vs "
                   f"{base['steps_per_s']:.1f}.")
    load, cores = doc.get("load_avg_1min"), doc.get("cpu_count")
    if load is not None and cores and load > cores:
        msg = (f"the machine was busy (load average {load:.1f} on {cores} cores): other "
               "processes inflate these times")
        if (doc.get("torch_threads") or 1) > 1 and doc.get("device") == "cpu":
            msg += (f"; {doc['torch_threads']} torch threads waiting for each other on a "
                    "shared CPU can make steps many times slower: compare with --threads 1")
        out.append(msg + ".")
    if data > 0.25:
        out.append("data-bound: use prefetching; on a GPU also a larger batch so compute "
                   "amortizes the per-step sampling cost.")
    elif compute > 0.75:
        out.append("compute-bound: the data path is not the limit; samples/s grows with a "
                   "faster device, a larger batch or a smaller model (on CPU, more torch threads "
                   "only when cores are free).")
    return out
