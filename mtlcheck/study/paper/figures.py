"""Figures 3-5 (paper 001, §5.4): the trajectories of GDS, GMS and FD of the parameter-level runs
relative to the Baseline's (same seed), smoothed with a moving average over 1/10 of the trajectory
length, mean over seeds with a band of its 95 % Student-t interval, one small panel per method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtlcheck.study.paper.our_tables import LEVEL_TEXT
from mtlcheck.study.paper.result_table import BASELINE
from mtlcheck.study.paper.runs import MEASURES, Runs, seeds_text
from mtlcheck.study.statistics import LEVEL, t_quantile

__all__ = ["FIGURES", "Curve", "moving_average", "relative_curves", "trajectory_figures"]

FIGURES = {"gds": 3, "gms": 4, "fd": 5}  # §5.4: Figure 3 GDS, Figure 4 GMS, Figure 5 FD


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average, 'valid' part only: out[i] = mean(values[i : i + window]) (§5.4).
    A NaN in a window makes that point NaN (a gap in the plot), never a silently smaller window."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"moving_average: window must be an int >= 1, got {window!r}")
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) < window:
        raise ValueError(f"moving_average: need a 1-D series of at least {window} values, got shape {x.shape}")
    return np.convolve(x, np.ones(window) / window, mode="valid")


@dataclass(frozen=True)
class Curve:
    """One panel: a method's smoothed mean difference to the Baseline over seeds, per step."""

    method: str
    steps: np.ndarray
    values: np.ndarray  # smoothed mean over seeds of (method − baseline)
    seeds: tuple[int, ...]
    window: int
    length: int
    half_width: np.ndarray | None = None  # per step: t interval over seeds of the smoothed difference


def relative_curves(runs: Runs, key: str) -> tuple[list[Curve], list[str]]:
    """Per parameter-level method: mean over seeds of trajectory − Baseline's trajectory of the same
    seed on their common steps, smoothed with window max(1, length // 10) (§5.4); and notes naming the
    seeds or methods left out, and why."""
    base = {r.spec.seed: r for r in runs.groups.get((BASELINE, "parameter"), ()) if r.status == "done"}
    curves, notes = [], []
    for name, level in runs.keys:
        if level != "parameter" or name == BASELINE:
            continue
        pairs = [
            (r, base[r.spec.seed]) for r in runs.groups[(name, level)] if r.status == "done" and r.spec.seed in base
        ]
        skipped = [r for r in runs.groups[(name, level)] if r.status != "done" or r.spec.seed not in base]
        if skipped:
            notes.append(
                f"{name}: seed(s) {seeds_text(skipped)} left out ("
                + ", ".join(r.status if r.status != "done" else "no done Baseline run of that seed" for r in skipped)
                + ")"
            )
        per_seed = []
        for r, b in pairs:
            mine = dict(zip((r.trajectory or {}).get("step", []), (r.trajectory or {}).get(key, [])))
            theirs = dict(zip((b.trajectory or {}).get("step", []), (b.trajectory or {}).get(key, [])))
            per_seed.append({s: float(mine[s]) - float(theirs[s]) for s in mine.keys() & theirs.keys()})
        common = sorted(set.intersection(*(set(d) for d in per_seed))) if per_seed else []
        if not common:
            if pairs:
                notes.append(f"{name}: no recorded step in common with the Baseline")
            continue
        window = max(1, len(common) // 10)
        smoothed = np.array([moving_average([d[s] for s in common], window) for d in per_seed])
        half = None
        if len(per_seed) > 1:  # Student-t interval over seeds at every step (smoothing is linear)
            half = t_quantile(LEVEL, len(per_seed) - 1) * smoothed.std(axis=0, ddof=1) / math.sqrt(len(per_seed))
        curves.append(
            Curve(
                name,
                np.array(common[window - 1 :]),
                smoothed.mean(axis=0),
                tuple(r.spec.seed for r, _ in pairs),
                window,
                len(common),
                half,
            )
        )
    return curves, notes


def _figure_path(outdir: Path, key: str) -> Path:
    return outdir / f"figure{FIGURES[key]}_{key}.png"


def trajectory_figures(runs: Runs, outdir: str | Path) -> list[Path]:
    """Figures 3 (GDS), 4 (GMS), 5 (FD) as PNG: each parameter-level method's trajectory minus the
    Baseline's (same seed), moving average over 1/10 of the length (at least 1 point), mean over
    seeds with a band of its 95 % Student-t interval over seeds (no band with one seed). One small
    panel per method on a shared y axis, so that 15 curves never overlap. Raises ValueError when
    there is no done parameter-level Baseline run to subtract."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not any(r.status == "done" for r in runs.groups.get((BASELINE, "parameter"), ())):
        raise ValueError(
            f"{runs.label}: no done parameter-level {BASELINE} (ew) run; Figures 3-5 plot the "
            "trajectories relative to it"
        )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    names = [n for n, lv in runs.keys if lv == "parameter" and n != BASELINE]
    cmap = colormaps["tab20"]
    paths = []
    for key, label, _ in MEASURES:
        curves, _ = relative_curves(runs, key)
        ncols = min(4, max(1, len(curves)))
        nrows = max(1, math.ceil(len(curves) / ncols))
        fig = Figure(figsize=(3.2 * ncols + 0.6, 2.3 * nrows + 1.1))
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
        for ax in axes[len(curves) :]:
            ax.set_visible(False)
        if not curves:
            axes[0].set_visible(True)
            axes[0].text(0.5, 0.5, "no curves", ha="center", va="center", transform=axes[0].transAxes)
        for ax, c in zip(axes, curves):
            i = names.index(c.method) % 20  # the 10 dark tab20 colours first, then the 10 light ones
            color = cmap(2 * i if i < 10 else 2 * (i - 10) + 1)
            ax.axhline(0.0, color="black", lw=0.8, ls="--")
            if c.half_width is not None:
                ax.fill_between(
                    c.steps, c.values - c.half_width, c.values + c.half_width, color=color, alpha=0.25, lw=0
                )
            ax.plot(c.steps, c.values, color=color, lw=1.6, marker="." if len(c.steps) < 30 else None)
            n = len(c.seeds)
            ax.set_title(f"{c.method} (n={n}{', no band' if n < 2 else ''})", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for ax in axes[(nrows - 1) * ncols :]:
            ax.set_xlabel("training step", fontsize=8)
        for ax in axes[::ncols]:
            ax.set_ylabel(f"Δ{label} vs {BASELINE}", fontsize=8)
        windows = sorted({(c.window, c.length) for c in curves})
        smooth = ", ".join(f"window {w} of {n} points" for w, n in windows) or "no curves"
        fig.suptitle(
            f"Figure {FIGURES[key]}: {label} − {BASELINE} {label} (same seed), {runs.bench.name}, budget "
            f"{runs.budget}; parameter-level runs, moving average ({smooth});\nline: mean over seeds, band: "
            f"{LEVEL_TEXT} Student-t interval over seeds, dashed: the {BASELINE}",
            fontsize=9,
        )
        fig.tight_layout()
        path = _figure_path(outdir, key)
        fig.savefig(path, dpi=100, metadata={"Software": None})
        paths.append(path)
    return paths
