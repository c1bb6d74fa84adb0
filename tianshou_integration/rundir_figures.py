"""The run directory's figures: ``learning_curve.png`` and ``exploration.png`` (matplotlib, Agg
backend), drawn from what :class:`~tianshou_integration.rundir.RunDir` wrote."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explorer_rundir import informativeness
from explorer_rundir.format import EXPLORATION_PNG, LEARNING_CURVE_PNG, pyplot, save_png

log = logging.getLogger(__name__)

__all__ = ["write_plots"]


def write_plots(path: Path, train_points: Sequence[tuple[int, float]], eval_points: Sequence[tuple[int, float]],
                updates: Sequence[dict[str, Any]], *, title: str = "",
                labels: tuple[str, ...] | list[str] = ()) -> None:
    """``learning_curve.png`` and ``exploration.png`` in ``path``.

    :param train_points: ``(env step, return)`` of each training episode.
    :param eval_points: ``(env step, mean return)`` of each greedy evaluation.
    :param updates: the lines of ``updates.jsonl``.
    :param labels: one name per action / dimension for the exploration plot's legend.
    """
    try:
        plt = pyplot()
    except Exception as exc:
        log.warning("plots skipped: %s", exc)
        return
    _plot_learning_curve(plt, path, list(train_points), list(eval_points), title)
    _plot_exploration(plt, path, list(updates), title, tuple(labels))


def _plot_learning_curve(plt: Any, path: Path, train_points: list[tuple[int, float]],
                         eval_points: list[tuple[int, float]], title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    if train_points:
        xs, ys = zip(*train_points, strict=True)
        ax.plot(xs, ys, ".", alpha=0.25, markersize=3, label="training episode")
        window = max(1, len(ys) // 20)
        if window > 1:
            smooth = [sum(ys[max(0, i - window + 1):i + 1]) / len(ys[max(0, i - window + 1):i + 1])
                      for i in range(len(ys))]
            ax.plot(xs, smooth, "-", linewidth=1, label=f"training (mean of {window})")
    if eval_points:
        xs, ys = zip(*eval_points, strict=True)
        ax.plot(xs, ys, "o-", linewidth=2, label="greedy evaluation")
    ax.set_xlabel("env step")
    ax.set_ylabel("return")
    ax.set_title(title or "learning curve")
    if train_points or eval_points:
        ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    save_png(fig, path / LEARNING_CURVE_PNG, dpi=110)

def _plot_exploration(plt: Any, path: Path, all_updates: list[dict[str, Any]], title: str,
                      labels: tuple[str, ...]) -> None:
    """Three panels over the updates: their values, how informative each was, how stale."""
    updates = [u for u in all_updates if u.get("source") != "fallback" and u.get("values")]
    applied = [u for u in updates if u.get("applied_at_step") is not None]
    fig, (ax, ax_info, ax_stale) = plt.subplots(3, 1, figsize=(7, 9), sharex=True,
                                                 gridspec_kw={"height_ratios": [2, 1.3, 1]})
    if updates:
        # what the collector used, over env steps; publication order when nothing was applied
        shown = applied or updates
        xs = [u["applied_at_step"] for u in applied] if applied else list(range(1, len(updates) + 1))
        width = len(shown[0]["values"])
        kind = shown[0]["kind"]
        unit = "action" if kind == "distribution" else "dimension"
        for i in range(width):
            name = labels[i] if len(labels) == width else f"{unit} {i}"
            ax.step(xs, [u["values"][i] if i < len(u["values"]) else float("nan") for u in shown],
                    where="post", marker="o", markersize=3, label=name)  # markers: a lone update shows
        ax.set_ylabel("probability" if kind == "distribution" else "bias (normalised units)")
        ax.legend(loc="best", fontsize=8)
        _plot_informativeness(ax_info, xs, shown, kind)
        _plot_staleness(ax_stale, xs, shown)
        ax_stale.set_xlabel("env step (update first applied)" if applied else "update (in publication order)")
    else:
        for panel in (ax, ax_info, ax_stale):
            panel.text(0.5, 0.5, "no exploration updates", ha="center", va="center", transform=panel.transAxes)
    fallbacks = sum(1 for u in all_updates if u.get("source") == "fallback")
    informative = sum(1 for u in applied if u.get("informative") is True)
    ax.set_title((title + " - " if title else "") + f"exploration ({len(updates)} updates, {len(applied)} "
                 f"applied, {informative} informative, {fallbacks} fallbacks)", fontsize=10)
    for panel in (ax, ax_info, ax_stale):
        panel.grid(alpha=0.3)
    save_png(fig, path / EXPLORATION_PNG, dpi=110)

def _plot_informativeness(ax: Any, xs: list[int], shown: list[dict[str, Any]], kind: str) -> None:
    limit = informativeness.threshold(kind)
    metric, change = limit["metric"], informativeness.MEASURE_KEYS[kind][-1]
    values = [u.get(metric, float("nan")) for u in shown]
    ax.step(xs, values, where="post", color="C0", label=metric)
    marks = [u.get("informative") is True for u in shown]
    ax.plot([x for x, m in zip(xs, marks, strict=True) if m], [v for v, m in zip(values, marks, strict=True) if m],
            "o", color="C2", markersize=5, label="informative")
    ax.plot([x for x, m in zip(xs, marks, strict=True) if not m],
            [v for v, m in zip(values, marks, strict=True) if not m], "x", color="C3", markersize=6,
            label="not informative")
    ax.plot(xs, [u.get(change, float("nan")) for u in shown], ".", color="C1", label=f"{change} (vs previous)")
    ax.axhline(limit["min"], color="k", linestyle="--", linewidth=1, label=f"threshold {limit['min']:g}")
    ax.set_ylabel("KL (nats), change (TV)" if kind == "distribution" else "normalised units")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize=7)

def _plot_staleness(ax: Any, xs: list[int], shown: list[dict[str, Any]]) -> None:
    episodes = [u.get("staleness_episodes") for u in shown]
    steps = [u.get("staleness_steps") for u in shown]
    ax.plot(xs, [float("nan") if e is None else e for e in episodes], "o-", color="C4", markersize=3)
    ax.set_ylabel("staleness (episodes)", color="C4")
    twin = ax.twinx()
    twin.plot(xs, [float("nan") if s is None else s for s in steps], "s:", color="C5", markersize=3)
    twin.set_ylabel("staleness (env steps)", color="C5")
    ax.set_ylim(bottom=0)
    twin.set_ylim(bottom=0)
