"""What the report compares arms on: one number per run, in return units.

``final`` (default): the final greedy-evaluation return (``RunResult.final_return``).
``auc``: the greedy-evaluation curve averaged over training (``RunResult.auc``).
``train``: the mean return of every training episode (``RunResult.train_mean``); with a reward of
1 at the goal and 0 elsewhere (FrozenLake), the share of training episodes that reached the goal.

Chosen by the spec's ``metric:`` (stored in ``study.json``) or ``llm-explorer report --metric``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from explorer_pipeline.errors import UsageError

__all__ = ["DEFAULT_METRIC", "METRICS", "METRIC_NAMES", "Metric", "get_metric", "study_metric"]


@dataclass(frozen=True)
class Metric:
    """One way to score a run, and how the report names it."""

    name: str
    attribute: str
    """The :class:`~.results.RunResult` property holding the run's value."""
    title: str
    """Section heading: ``Final greedy return``."""
    noun: str
    """In sentences: ``final greedy return``."""
    short: str
    """In table headers and axis labels: ``final return``."""
    definition: str
    """One sentence for the report's method section."""
    figure: str
    """The file name of its IQM / probability-of-improvement figure in ``figures/``."""

    def of(self, run: Any) -> float:
        """The run's value (NaN when it has none)."""
        return float(getattr(run, self.attribute))


METRICS: dict[str, Metric] = {
    "final": Metric(
        "final", "final_return", "Final greedy return", "final greedy return", "final return",
        "the greedy-evaluation return at the end of training (`final_eval_return` in each run's `summary.json`, "
        "else the last evaluation in `metrics.csv`).",
        "final_returns.png"),
    "auc": Metric(
        "auc", "auc", "Greedy return averaged over training (AUC)", "greedy return averaged over training (AUC)",
        "AUC return",
        "the area under the greedy-evaluation curve divided by its step span (trapezoidal rule): the greedy "
        "return averaged over training.",
        "auc_returns.png"),
    "train": Metric(
        "train", "train_mean", "Mean training return", "mean training return", "mean training return",
        "the mean return of every training episode of the run (`train_return` rows of `metrics.csv`), i.e. "
        "of the exploring agent; with a reward of 1 at a goal and 0 elsewhere, the share of training "
        "episodes that reached the goal.",
        "train_returns.png"),
}
METRIC_NAMES = tuple(METRICS)
DEFAULT_METRIC = "final"


def get_metric(name: str | None) -> Metric:
    """The metric called ``name`` (None: the default). Raises :class:`UsageError` for another name."""
    name = DEFAULT_METRIC if name is None else name
    if name not in METRICS:
        raise UsageError(f"unknown metric {name!r}; choose one of: {', '.join(METRIC_NAMES)}")
    return METRICS[name]


def study_metric(meta: dict[str, Any]) -> str | None:
    """The metric a study's ``study.json`` asks for (its spec's ``metric:``), if any."""
    value = meta.get("metric")
    if value is None and isinstance(meta.get("spec"), dict):
        value = meta["spec"].get("metric")
    return value if isinstance(value, str) else None
