"""The report's PNG figures (matplotlib, Agg backend). Each function writes one file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from explorer_rundir.format import pyplot, save_png

from .stats import Estimate, mean_band

__all__ = ["cost_figure", "final_scores_figure", "learning_curves_figure", "profile_figure"]

DPI = 120
#: line styles and widths per arm, so arms whose curves coincide stay visible
STYLES = (("-", 3.2), ("--", 2.2), (":", 2.2), ("-.", 1.6))


def _colors(arms: Sequence[str]) -> dict[str, Any]:
    cycle = pyplot().get_cmap("tab10")
    return {arm: cycle(i % 10) for i, arm in enumerate(arms)}


def _save(fig: Any, path: Path) -> None:
    save_png(fig, path, dpi=DPI)


def learning_curves_figure(curves: Mapping[str, Mapping[str, list[list[tuple[float, float]]]]],
                           arms: Sequence[str], envs: Sequence[str], path: Path, *, seed: int = 0) -> None:
    """``curves[env][arm]``: one list of ``(step, greedy return)`` per run. Each arm's mean with a
    95% bootstrap band over runs, on the steps every run of that arm has reached."""
    plt = pyplot()
    colors = _colors(arms)
    cols = min(3, len(envs))
    rows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, env in zip(axes.flat, envs, strict=False):
        for index, arm in enumerate(arms):
            runs = [run for run in curves.get(env, {}).get(arm, []) if run]
            if not runs:
                continue
            start = max(run[0][0] for run in runs)
            stop = min(run[-1][0] for run in runs)
            grid = np.array(sorted({s for run in runs for s, _ in run if start <= s <= stop}), dtype=float)
            if grid.size == 0:
                continue
            matrix = np.array([np.interp(grid, [s for s, _ in run], [v for _, v in run]) for run in runs])
            mean, low, high = mean_band(matrix, seed=seed)
            label = f"{arm} (n={len(runs)})"
            style, width = STYLES[index % len(STYLES)]
            ax.plot(grid, mean, linestyle=style, linewidth=width, marker="o" if grid.size < 4 else None,
                    color=colors[arm], label=label, markersize=4)
            if not np.isnan(low).all():
                ax.fill_between(grid, low, high, color=colors[arm], alpha=0.2, linewidth=0)
        ax.set_title(env)
        ax.set_xlabel("env step")
        ax.set_ylabel("greedy return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    fig.suptitle("Learning curves: mean over seeds, 95% bootstrap band", fontsize=11)
    fig.tight_layout()
    _save(fig, path)


def _intervals(ax: Any, labels: Sequence[str], estimates: Sequence[Estimate], colors: Mapping[str, Any]) -> None:
    ys = np.arange(len(labels))[::-1]
    for y, label, est in zip(ys, labels, estimates, strict=True):
        if math.isnan(est.value):
            continue
        color = colors.get(label, "C0")
        if est.has_interval:
            ax.plot([est.low, est.high], [y, y], color=color, linewidth=6, alpha=0.45, solid_capstyle="butt")
        ax.plot([est.value], [y], "|", color="black", markersize=14, markeredgewidth=2)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)
    ax.grid(axis="x", alpha=0.3)


def final_scores_figure(arms: Sequence[str], iqms: Mapping[str, Estimate], baseline: str | None,
                        pois: Mapping[str, Estimate], path: Path, *, metric: str = "final return") -> None:
    """IQM of the normalised ``metric`` per arm, and P(arm > baseline), with 95% intervals."""
    plt = pyplot()
    colors = _colors(arms)
    compared = [arm for arm in arms if arm in pois]
    ncols = 2 if compared else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 0.55 * len(arms) + 1.6), squeeze=False)
    _intervals(axes[0][0], list(arms), [iqms[a] for a in arms], colors)
    axes[0][0].set_xlabel(f"IQM of normalised {metric}")
    axes[0][0].set_title(f"{metric[:1].upper()}{metric[1:]} (95% stratified bootstrap CI)", fontsize=10)
    if compared:
        ax = axes[0][1]
        _intervals(ax, compared, [pois[a] for a in compared], colors)
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(f"P(arm > {baseline})")
        ax.set_title("Probability of improvement over the baseline", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def profile_figure(arms: Sequence[str], taus: np.ndarray,
                   profiles: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Performance profiles: fraction of runs with a normalised score above tau."""
    plt = pyplot()
    colors = _colors(arms)
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        if arm not in profiles:
            continue
        profile, low, high = profiles[arm]
        ax.plot(taus, profile, color=colors[arm], label=arm)
        if not np.isnan(low).all():
            ax.fill_between(taus, low, high, color=colors[arm], alpha=0.15, linewidth=0, step=None)
    ax.set_xlabel("normalised score tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Performance profiles (95% stratified bootstrap bands)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def cost_figure(arms: Sequence[str], per_arm: Mapping[str, Mapping[str, float]], path: Path) -> None:
    """Tokens per run (input and output) and mean request latency per arm."""
    plt = pyplot()
    fig, (ax_tokens, ax_latency) = plt.subplots(1, 2, figsize=(10, 0.5 * len(arms) + 1.8))
    ys = np.arange(len(arms))[::-1]
    inputs = [per_arm[a].get("input_tokens", 0.0) or 0.0 for a in arms]
    outputs = [per_arm[a].get("output_tokens", 0.0) or 0.0 for a in arms]
    ax_tokens.barh(ys, inputs, color="C0", label="input")
    ax_tokens.barh(ys, outputs, left=inputs, color="C1", label="output")
    ax_tokens.set_yticks(ys)
    ax_tokens.set_yticklabels(arms)
    ax_tokens.set_xlabel("tokens per run (mean)")
    ax_tokens.legend(fontsize=8)
    latency = [per_arm[a].get("latency_s") for a in arms]
    ax_latency.barh(ys, [v if v is not None and not math.isnan(v) else 0.0 for v in latency], color="C2")
    ax_latency.set_yticks(ys)
    ax_latency.set_yticklabels(arms)
    ax_latency.set_xlabel("mean request latency (s)")
    for ax in (ax_tokens, ax_latency):
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("LLM cost per arm", fontsize=11)
    fig.tight_layout()
    _save(fig, path)
