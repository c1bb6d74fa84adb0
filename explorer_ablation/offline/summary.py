"""Per-arm summaries of an offline evaluation: bootstrap intervals, a table, a figure, JSON."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from explorer_rundir.format import pyplot, save_png, write_json_atomic, write_text_atomic

from .evaluate import Outcome

__all__ = ["RESULTS_FILE", "SCORES_CSV", "SCORES_PNG", "TABLE_FILE", "summarise", "write_outputs"]

RESULTS_FILE, SCORES_CSV, TABLE_FILE, SCORES_PNG = "results.json", "scores.csv", "table.md", "scores.png"
FORMAT = {"format": "llm-explorer-eval-advice", "version": 1}


def bootstrap_interval(values: Sequence[float], *, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean (scipy.stats.bootstrap); the value itself for
    fewer than two values or values that are all equal."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return (math.nan, math.nan)
    if data.size < 2 or np.ptp(data) == 0:
        return (float(data.mean()), float(data.mean()))
    from scipy.stats import bootstrap

    res = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                    random_state=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """One entry per (set, arm): the mean score with its interval, every metric's mean, failures
    by reason, tokens and latency."""
    groups: dict[tuple[str, str], list[Outcome]] = {}
    for o in outcomes:
        groups.setdefault((o.set_name, o.arm), []).append(o)
    rows = []
    for (set_name, arm), items in groups.items():
        ok = [o for o in items if o.failure is None]
        scores = [o.scores["score"] for o in ok]
        low, high = bootstrap_interval(scores)
        failures = Counter(o.failure for o in items if o.failure is not None)
        metrics = sorted({k for o in ok for k in o.scores})
        rows.append({
            "set": set_name, "arm": arm, "scenarios": len(items), "scored": len(ok),
            "score": float(np.mean(scores)) if scores else None, "ci_low": low if scores else None,
            "ci_high": high if scores else None,
            "metrics": {k: float(np.mean([o.scores[k] for o in ok])) for k in metrics},
            "failures": dict(failures),
            "parse_failures": sum(v for k, v in failures.items() if k == "parse_error"),
            "validation_failures": sum(v for k, v in failures.items() if k.startswith("validation")),
            "input_tokens": sum(o.input_tokens for o in items), "output_tokens": sum(o.output_tokens for o in items),
            "latency_s_mean": float(np.mean([o.latency_s for o in items])),
            "latency_s_total": float(sum(o.latency_s for o in items)),
        })
    return {**FORMAT, "arms": rows}


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(summary: dict[str, Any]) -> str:
    """A Markdown table, one row per (set, arm)."""
    lines = ["| set | arm | score | 95% CI | other metrics | scored | failures | tokens in/out | latency s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["arms"]:
        other = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in r["metrics"].items() if k != "score")
        fails = ", ".join(f"{k} {v}" for k, v in sorted(r["failures"].items())) or "0"
        lines.append(f"| {r['set']} | {r['arm']} | {_fmt(r['score'])} | [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] "
                     f"| {other} | {r['scored']}/{r['scenarios']} | {fails} | {r['input_tokens']}/{r['output_tokens']} "
                     f"| {_fmt(r['latency_s_mean'], 2)} |")
    return "\n".join(lines) + "\n"


def _figure(summary: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    sets = list(dict.fromkeys(r["set"] for r in summary["arms"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(6.0 * len(sets), 3.8), squeeze=False)
    fig.subplots_adjust(wspace=0.45)
    for ax, set_name in zip(axes[0], sets, strict=True):
        rows = [r for r in summary["arms"] if r["set"] == set_name and r["score"] is not None]
        y = np.arange(len(rows))
        means = [r["score"] for r in rows]
        err = np.array([[r["score"] - r["ci_low"] for r in rows], [r["ci_high"] - r["score"] for r in rows]])
        ax.errorbar(means, y, xerr=err, fmt="o", capsize=3)
        ax.axvline(0.0, color="grey", lw=0.8)
        ax.set_yticks(y, [r["arm"] for r in rows])
        ax.invert_yaxis()
        ax.set_title(set_name)
        ax.set_xlabel("score vs reference (mean, 95% bootstrap CI)")
    save_png(fig, path)


def write_outputs(out: Path, outcomes: Sequence[Outcome], summary: dict[str, Any], extra: dict[str, Any]) -> None:
    """``results.json`` (summary, per-scenario rows, ``extra``), ``scores.csv``, ``table.md``, ``scores.png``."""
    rows = [o.row() for o in outcomes]
    write_json_atomic(out / RESULTS_FILE, {**summary, **extra, "scenarios": rows})
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        values = r["values"]
        writer.writerow({**r, "values": " ".join(f"{v:.4g}" for v in values) if values else ""})
    write_text_atomic(out / SCORES_CSV, buf.getvalue())
    write_text_atomic(out / TABLE_FILE, table(summary))
    _figure(summary, out / SCORES_PNG)
