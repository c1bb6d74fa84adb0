"""Does the offline score predict the RL outcome? The validation study of docs/offline-eval.md.

Reads a finished study of the graded controls (``llm-explorer ablate
examples/validation-controls-ENV.yaml``) and the offline scores of the same controls
(``llm-explorer eval-advice ... --controls``, its ``results.json``), and prints one markdown table
row per arm (offline score with its interval, the RL outcome: the mean over seeds of the study's
metric with a 95 % t interval) and the Spearman rank correlation (``scipy.stats.spearmanr``)
between the offline score and the RL outcome over the five controls, and over the controls and
the baseline. ``--metric`` picks another of the report's metrics (``final``, ``auc``, ``train``);
``--json FILE`` writes the same numbers for scripts.

    python benchmarks/offline_validation.py STUDY_DIR OFFLINE_DIR [OFFLINE_DIR ...] [--json FILE]

Several offline directories (the whole scenario set, only the scenarios the study's runs reach)
give one score column and one correlation each.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import scipy.stats

from explorer_ablation.metrics import get_metric, study_metric
from explorer_ablation.offline.controls import CONTROL_LEVELS
from explorer_ablation.results import load_study

CONTROLS = list(CONTROL_LEVELS)


def rl_outcomes(study_dir: Path, metric_name: str | None = None) -> tuple[str, dict[str, list[float]]]:
    """The metric's name (default: the study's) and, per arm, its value for every complete run (seed order)."""
    study = load_study(study_dir)
    metric = get_metric(metric_name or study_metric(study.meta))
    per_arm = {arm: [metric.of(r) for r in sorted(study.complete(arm), key=lambda r: r.seed)] for arm in study.arms}
    return metric.name, per_arm


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval over seeds (the interval is nan for fewer than two values)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(scipy.stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def offline_scores(offline_dir: Path) -> dict[str, dict[str, float]]:
    """Per arm of ``results.json``: score, interval and the number of scenarios scored."""
    results = json.loads((offline_dir / "results.json").read_text(encoding="utf-8"))
    return {a["arm"]: {"score": a["score"], "low": a["ci_low"], "high": a["ci_high"], "scored": a["scored"]}
            for a in results["arms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("offline", type=Path, nargs="+")
    parser.add_argument("--metric", choices=["final", "auc", "train"], help="default: the study's metric")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    metric, outcomes = rl_outcomes(args.study, args.metric)
    offline = {str(d): offline_scores(d) for d in args.offline}
    arms = [*CONTROLS, *[a for a in outcomes if a not in CONTROLS]]
    rl = {arm: t_interval(outcomes[arm]) for arm in arms if outcomes.get(arm)}
    head = " | ".join(f"offline score ({Path(d).name})" for d in offline)
    print(f"| arm | {head} | RL: mean {metric} over seeds [95% t interval] | seeds |")
    print("|" + " --- |" * (3 + len(offline)))
    for arm in arms:
        cells = []
        for scores in offline.values():
            s = scores.get(arm)
            cells.append("n/a" if s is None else f"{s['score']:.3f} [{s['low']:.3f}, {s['high']:.3f}]")
        mean, low, high = rl[arm]
        print(f"| {arm} | {' | '.join(cells)} | {mean:.1f} [{low:.1f}, {high:.1f}] | {len(outcomes[arm])} |")
    report: dict[str, object] = {"study": str(args.study), "metric": metric, "outcomes": outcomes,
                                 "offline": offline, "spearman": {}}
    for name, scores in offline.items():
        for label, group in (("controls", CONTROLS), ("controls+baseline", [a for a in arms if a in scores])):
            x = [scores[a]["score"] for a in group]
            y = [rl[a][0] for a in group]
            res = scipy.stats.spearmanr(x, y)
            rho, p = float(res.statistic), float(res.pvalue)
            report["spearman"][f"{Path(name).name}/{label}"] = {"rho": rho, "p": p, "n": len(group)}  # type: ignore[index]
            print(f"Spearman rho ({Path(name).name}, {label}, n={len(group)}): {rho:.3f} (p = {p:.3f}); goal >= 0.8")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
