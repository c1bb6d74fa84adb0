"""``llm-explorer report DIR``: ``summary.csv``, ``report.md`` and ``figures/*.png`` for a study.

Statistics use complete runs only. Arms are compared on one number per run, the study's metric
(:mod:`.metrics`: the final greedy return by default, else the greedy return averaged over training
or the mean training return; the spec's ``metric:``, or ``--metric``). It is normalised per
environment, ``(x - min_score) / (max_score - min_score)``, where ``min_score`` defaults to the
baseline arm's mean and ``max_score`` to the best run in the study (a spec can set both, e.g. to a
best-known score). See :mod:`.stats` for the estimators.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from explorer_rundir import informativeness
from explorer_rundir.format import write_text_atomic

from . import figures
from .metrics import Metric, get_metric, study_metric
from .results import SUMMARY_COLUMNS, RunResult, Study, load_study
from .stats import CONFIDENCE, RESAMPLES, Estimate, iqm_estimate, performance_profile, poi_estimate

__all__ = ["INFORMATIVE_MAJORITY", "MIN_SEEDS_FOR_CLAIMS", "Analysis", "ReportFiles", "analyse", "write_report"]

#: below this many complete runs per arm and environment the report warns that intervals and
#: probabilities of improvement are descriptive only (percentile bootstraps under-cover there).
MIN_SEEDS_FOR_CLAIMS = 5
#: an LLM arm whose runs have, on average, a smaller share of informative applied updates than this
#: explored like the algorithm's own default most of the time, and the report says so.
INFORMATIVE_MAJORITY = 0.5
FIGURES = ("learning_curves.png", "final_returns.png", "performance_profile.png", "cost.png")
"""The figures of the default metric; the scores figure (second) is named by the metric (:attr:`.Metric.figure`)."""


@dataclass(frozen=True)
class Normaliser:
    low: float
    high: float
    low_from: str
    high_from: str

    @property
    def degenerate(self) -> bool:
        return not (self.high > self.low)

    def __call__(self, values: Sequence[float]) -> list[float]:
        scale = 1.0 if self.degenerate else self.high - self.low
        return [(v - self.low) / scale for v in values]


@dataclass
class Analysis:
    """Everything the report shows, computed once."""

    study: Study
    metric: Metric = field(default_factory=get_metric)
    """What arms are compared on; ``raw`` holds its value per run."""
    normalisers: dict[str, Normaliser] = field(default_factory=dict)
    raw: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # raw[env][arm]
    normalised: dict[str, list[list[float]]] = field(default_factory=dict)  # normalised[arm][env index]
    iqm: dict[str, Estimate] = field(default_factory=dict)
    poi: dict[str, Estimate] = field(default_factory=dict)
    pairs: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    """LLM arm -> {its plain twin, each exploration-baseline arm} -> P(LLM arm > that arm) (:func:`pairings`)."""
    taus: np.ndarray = field(default_factory=lambda: np.zeros(0))
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    cost: dict[str, dict[str, float]] = field(default_factory=dict)
    guidance: dict[str, dict[str, float]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def runs_per_cell(self) -> dict[tuple[str, str], int]:
        """Complete runs with a finite value of the metric, per arm and environment."""
        return {(arm, env): len(self.raw.get(env, {}).get(arm, [])) for arm in self.study.arms
                for env in self.study.envs}


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`write_report` wrote."""

    summary_csv: Path
    report_md: Path
    figures: tuple[Path, ...]


# --------------------------------------------------------------------------- analysis
def analyse(study: Study, *, seed: int = 0, metric: str | None = None) -> Analysis:
    """Normalised scores, IQMs, probabilities of improvement, profiles, cost and guidance per arm,
    and the report's warnings, from the complete runs of ``study``, compared on ``metric``
    (``final``, ``auc`` or ``train``; default: the study's spec, else ``final``).
    """
    a = Analysis(study, get_metric(metric or study_metric(study.meta)))
    for env in study.envs:
        a.raw[env] = {arm: [v for v in map(a.metric.of, study.complete(arm, env)) if math.isfinite(v)]
                      for arm in study.arms}
        a.normalisers[env] = _normaliser(study, env, a.raw[env])
    for arm in study.arms:
        a.normalised[arm] = [a.normalisers[env](a.raw[env][arm]) for env in study.envs]
        a.iqm[arm] = iqm_estimate(a.normalised[arm], seed=seed)
    baseline = study.baseline
    if baseline is not None:
        for arm in study.arms:
            if arm != baseline:
                a.poi[arm] = poi_estimate([a.raw[env][arm] for env in study.envs],
                                          [a.raw[env][baseline] for env in study.envs], seed=seed)
    for arm, others in pairings(study).items():
        a.pairs[arm] = {other: poi_estimate([a.raw[env][arm] for env in study.envs],
                                            [a.raw[env][other] for env in study.envs], seed=seed) for other in others}
    every = [v for arm in study.arms for env_scores in a.normalised[arm] for v in env_scores]
    if every:
        lo, hi = min(0.0, min(every)), max(1.0, max(every))
        a.taus = np.linspace(lo, hi, 101)
        a.profiles = {arm: performance_profile(a.normalised[arm], a.taus, seed=seed)
                      for arm in study.arms if any(a.normalised[arm])}
    a.cost = {arm: _cost(study, arm) for arm in study.arms}
    a.guidance = {arm: _guidance(study, arm) for arm in study.arms}
    a.warnings = _warnings(a)
    return a


def _arm_settings(study: Study) -> dict[str, dict]:
    """Each arm's shortcut settings (``algo``, ``provider`` ...), from its first planned run."""
    out: dict[str, dict] = {}
    for run in study.runs:
        out.setdefault(run.arm, run.settings)
    return out


def pairings(study: Study) -> dict[str, list[str]]:
    """What each LLM arm (a provider other than ``none``) is compared with, besides the study's
    baseline: its *plain twin* (the one arm without an LLM that runs the same algorithm, when there
    is exactly one), then every arm without an LLM that runs an exploration baseline (noisy-dqn,
    rnd-dqn: ``tianshou_integration.names.EXPLORATION_BASELINES``). Arms with nothing to compare
    with are left out. Baseline arms are ordinary arms otherwise (IQM, profiles, the baseline table)."""
    from tianshou_integration.names import EXPLORATION_BASELINES  # light: no torch

    settings = _arm_settings(study)
    plain = [arm for arm in study.arms if settings.get(arm, {}).get("provider") == "none"]
    baselines = [arm for arm in plain if settings[arm].get("algo") in EXPLORATION_BASELINES]
    out: dict[str, list[str]] = {}
    for arm in study.arms:
        mine = settings.get(arm, {})
        if arm in plain or not mine:
            continue
        twins = [p for p in plain if p not in baselines and settings[p].get("algo") == mine.get("algo")]
        others = (twins if len(twins) == 1 else []) + [b for b in baselines if b != arm]
        if others:
            out[arm] = others
    return out


def _normaliser(study: Study, env: str, scores: dict[str, list[float]]) -> Normaliser:
    meta = study.env_meta(env)
    every = [v for values in scores.values() for v in values]
    baseline = study.baseline
    if meta.get("min_score") is not None:
        low, low_from = float(meta["min_score"]), "spec min_score"
    elif baseline is not None and scores.get(baseline):
        low, low_from = float(np.mean(scores[baseline])), f"mean of {baseline}"
    elif every:
        low, low_from = min(every), "worst run"
    else:
        low, low_from = 0.0, "no runs"
    if meta.get("max_score") is not None:
        high, high_from = float(meta["max_score"]), "spec max_score"
    elif every:
        high, high_from = max(every), "best run"
    else:
        high, high_from = 1.0, "no runs"
    return Normaliser(low, high, low_from, high_from)


def _finite_mean(values: Sequence[float | None]) -> float:
    """Mean of the finite values (NaN when there are none)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(kept)) if kept else math.nan


def _cost(study: Study, arm: str) -> dict[str, float]:
    runs = study.complete(arm)
    if not runs:
        return {}

    latencies = [v for r in runs for v in r.latencies]
    costs = [r.cost_usd(study.prices) for r in runs]
    return {
        "runs": len(runs),
        "llm_requests": _finite_mean([r.summary.get("llm_requests") for r in runs]),
        "updates_applied": _finite_mean([r.summary.get("updates_applied") for r in runs]),
        "updates_informative": _finite_mean([r.updates_informative for r in runs]),
        "input_tokens": _finite_mean([r.tokens()[0] for r in runs]),
        "output_tokens": _finite_mean([r.tokens()[1] for r in runs]),
        "latency_s": float(np.mean(latencies)) if latencies else math.nan,
        "fallbacks": _finite_mean([r.fallbacks for r in runs]),
        "wall_s": _finite_mean([r.summary.get("wall_s") for r in runs]),
        "steps_per_s": _finite_mean([r.summary.get("steps_per_s") for r in runs]),
        "cost_usd": _finite_mean(costs) if any(c is not None for c in costs) else math.nan,
        **_budget(runs),
    }


def _budget(runs: Sequence[RunResult]) -> dict[str, float]:
    """How many of ``runs`` had an LLM budget and how many reached it, and when (medians of the
    episode and env step at which their requests stopped; NaN when none did)."""
    stops = [r.budget_stop for r in runs if r.budget_stop is not None]

    def median(key: str) -> float:
        values = [float(s[key]) for s in stops if isinstance(s.get(key), int | float)]
        return float(np.median(values)) if values else math.nan

    return {"budget_limited_runs": sum(r.budget_limited for r in runs), "budget_reached_runs": len(stops),
            "budget_episode": median("episode"), "budget_step": median("env_step")}


_GUIDANCE_MEDIANS = ("entropy_norm", "kl_uniform_nats", "change_tv", "bias_max_abs", "bias_rms", "change_max_abs",
                     "staleness_episodes", "staleness_steps")


def _guidance(study: Study, arm: str) -> dict[str, float]:
    """Per arm: updates applied and informative per run, the mean informative share of its runs,
    and medians of each measure over every applied update of every complete run (NaN: none)."""
    runs = study.complete(arm)
    if not runs:
        return {}

    out = {
        "updates_applied": _finite_mean([r.summary.get("updates_applied") for r in runs]),
        "updates_informative": _finite_mean([r.updates_informative for r in runs]),
        "informative_share": _finite_mean([r.guidance.get("informative_share") for r in runs]),
    }
    updates = [u for r in runs for u in r.applied_updates]
    for key in _GUIDANCE_MEDIANS:
        values = [float(u[key]) for u in updates
                  if isinstance(u.get(key), int | float) and not isinstance(u[key], bool)]
        out[f"median_{key}"] = float(np.median(values)) if values else math.nan
    return out


def _warnings(a: Analysis) -> list[str]:
    out: list[str] = []
    cells = a.runs_per_cell()
    fewest = min(cells.values()) if cells else 0
    if fewest < 2:
        out.append(f"Some arm/environment cells have {fewest} complete run(s): no confidence interval can be "
                   "computed there, and nothing in this report is evidence of a difference.")
    elif fewest < MIN_SEEDS_FOR_CLAIMS:
        out.append(f"Only {fewest} complete runs per arm and environment (fewer than {MIN_SEEDS_FOR_CLAIMS}). "
                   "Percentile-bootstrap intervals from this few runs are too narrow (they under-cover) and "
                   "the probability of improvement can only take a few values: read every number here as "
                   f"descriptive, not as evidence. Run at least {MIN_SEEDS_FOR_CLAIMS} seeds (10 or more for small "
                   "differences) before claiming that an arm helps.")
    incomplete = [r for r in a.study.runs if not r.complete]
    if incomplete:
        out.append(f"{len(incomplete)} of {len(a.study.runs)} planned runs are not complete and are left out "
                   "of every statistic; if failures depend on the arm, the comparison is biased.")
    for env, norm in a.normalisers.items():
        if norm.degenerate:
            out.append(f"{env}: min_score ({norm.low:g}, {norm.low_from}) is not below max_score "
                       f"({norm.high:g}, {norm.high_from}); scores there are shifted but not scaled.")
    for arm in a.study.arms:
        runs = a.study.complete(arm)
        applied = a.cost.get(arm, {}).get("updates_applied", math.nan)
        if not runs or runs[0].settings.get("provider") == "none":
            continue
        if not applied >= 1:
            out.append(f"Arm `{arm}` applied {_fmt(applied, 2)} exploration updates per run on average: its runs "
                       "explored (almost) like the algorithm's own default, so it cannot show an effect of its "
                       "prompts. The LLM was too slow for the training budget: use `mode: blocking`, "
                       "more steps, or a faster model.")
        else:
            out += _guidance_warnings(arm, a.guidance.get(arm, {}))
    if a.study.baseline is None:
        out.append("No baseline arm (set `baseline:` in the spec): no probability of improvement is shown.")
    return out


def _guidance_warnings(arm: str, g: dict[str, float]) -> list[str]:
    """An LLM arm whose applied updates were (mostly) indistinguishable from the default exploration."""
    informative = g.get("updates_informative", math.nan)
    share = g.get("informative_share", math.nan)

    def rule(relation: str) -> str:
        return (f"KL from uniform {relation} {informativeness.KL_THRESHOLD_NATS:g} nats for a distribution, "
                f"largest |bias| {relation} {informativeness.BIAS_THRESHOLD:g} normalised units for a bias")

    see = ("See `updates.jsonl` (`kl_uniform_nats`, `bias_max_abs`) and `exchanges.jsonl` in its run directories "
           "for what the model answered.")
    if not informative > 0:
        return [f"Arm `{arm}` applied {_fmt(g.get('updates_applied'), 3)} updates per run, but none of them was "
                f"informative ({rule('below')}): its exploration was indistinguishable from the algorithm's own, so it "
                f"cannot show an effect of its prompts. {see}"]
    if share < INFORMATIVE_MAJORITY:
        return [f"Only {share:.0%} of the updates arm `{arm}` applied were informative ({rule('at least')}): most of "
                "the time it explored like the algorithm's own default, which dilutes any effect of its prompts. "
                f"{see}"]
    return []


def verdict(est: Estimate) -> str:
    if math.isnan(est.value):
        return "no runs to compare"
    if not est.has_interval:
        return "too few runs for an interval"
    if est.low > 0.5:
        return "better than the baseline (interval above 0.5)"
    if est.high < 0.5:
        return "worse than the baseline (interval below 0.5)"
    return "no clear difference (interval contains 0.5)"


# --------------------------------------------------------------------------- files
def write_report(out: Path, *, seed: int = 0, metric: str | None = None) -> ReportFiles:
    """Write ``summary.csv``, ``report.md`` and ``figures/`` into the study directory ``out``,
    comparing arms on ``metric`` (default: the study's spec's ``metric:``, else ``final``)."""
    out = Path(out)
    study = load_study(out)
    a = analyse(study, seed=seed, metric=metric)  # first: an unknown metric writes nothing
    summary_csv = _write_summary_csv(study, out / "summary.csv")
    fig_dir = out / "figures"
    names = (FIGURES[0], a.metric.figure, *FIGURES[2:])
    curves = {env: {arm: [r.eval_curve for r in study.complete(arm, env)] for arm in study.arms} for env in study.envs}
    figures.learning_curves_figure(curves, study.arms, study.envs, fig_dir / names[0], seed=seed)
    figures.final_scores_figure(study.arms, a.iqm, study.baseline, a.poi, fig_dir / names[1], metric=a.metric.short)
    if a.profiles:
        figures.profile_figure(study.arms, a.taus, a.profiles, fig_dir / names[2])
    figures.cost_figure(study.arms, a.cost, fig_dir / names[3])
    written = tuple(fig_dir / name for name in names if (fig_dir / name).exists())
    report_md = out / "report.md"
    write_text_atomic(report_md, _markdown(a, written))
    return ReportFiles(summary_csv, report_md, written)


def _write_summary_csv(study: Study, path: Path) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(SUMMARY_COLUMNS))
    writer.writeheader()
    for run in sorted(study.runs, key=lambda r: (study.arms.index(r.arm), study.envs.index(r.env), r.seed)):
        writer.writerow({k: "" if v is None else v for k, v in run.row(study.prices, study.out).items()})
    write_text_atomic(path, buffer.getvalue())
    return path


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) < 1e-9:  # floating-point noise, e.g. a mean minus itself
        x = 0.0
    return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:,.0f}"


def _est(e: Estimate, digits: int = 3) -> str:
    if math.isnan(e.value):
        return "–"
    if not e.has_interval:
        return f"{_fmt(e.value, digits)} (no interval)"
    return f"{_fmt(e.value, digits)} [{_fmt(e.low, digits)}, {_fmt(e.high, digits)}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _guidance_section(a: Analysis) -> list[str]:
    """Per arm: how many applied updates were informative, how far from default, how stale."""
    arms = [arm for arm in a.study.arms if a.guidance.get(arm)]
    if not arms:
        return []

    def has(key: str) -> bool:
        return any(not math.isnan(a.guidance[arm].get(key, math.nan)) for arm in arms)

    columns = [("updates applied / run", "updates_applied", 4), ("informative / run", "updates_informative", 4)]
    if has("median_kl_uniform_nats"):
        columns += [("median KL from uniform (nats)", "median_kl_uniform_nats", 3),
                    ("median normalised entropy", "median_entropy_norm", 3),
                    ("median change (TV distance)", "median_change_tv", 3)]
    if has("median_bias_max_abs"):
        columns += [("median max abs bias", "median_bias_max_abs", 3),
                    ("median change (max abs)", "median_change_max_abs", 3)]
    columns += [("median staleness (episodes)", "median_staleness_episodes", 3),
                ("median staleness (env steps)", "median_staleness_steps", 4)]
    rows = []
    for arm in arms:
        g = a.guidance[arm]
        share = g.get("informative_share", math.nan)
        cells = [_fmt(g.get(key), digits) for _, key, digits in columns]
        cells.insert(2, "–" if math.isnan(share) else f"{share:.0%}")
        rows.append([arm, *cells])
    header = ["arm", *(name for name, _, _ in columns)]
    header.insert(3, "informative share")
    lines = ["## Exploration updates", "",
             "Means per complete run; medians over every update the collector applied in the arm's complete runs. "
             f"An update is *informative* when it is distinguishable from the algorithm's own exploration: KL "
             f"divergence from the uniform distribution at least {informativeness.KL_THRESHOLD_NATS:g} nats "
             f"(discrete), or largest |bias| at least {informativeness.BIAS_THRESHOLD:g} in normalised action units "
             "(continuous). *Normalised entropy* is 1 for uniform; *change* compares each update with the one it "
             "replaced; *staleness* counts the episodes and env steps between the end of the episode an update "
             "was computed from and its first use. The informative share is averaged over runs.", ""]
    lines += _table(header, rows)
    lines.append("")
    return lines


def _pairs_section(a: Analysis) -> list[str]:
    """Each LLM arm against its plain twin and the exploration baselines: shown when that says more
    than the baseline table (a twin that is not the baseline, or any exploration-baseline arm)."""
    baseline = a.study.baseline
    if not any(other != baseline for others in a.pairs.values() for other in others):
        return []
    settings = _arm_settings(a.study)
    from tianshou_integration.names import EXPLORATION_BASELINES

    columns: list[str] = []
    for others in a.pairs.values():
        columns += [o for o in others if o not in columns and settings[o].get("algo") in EXPLORATION_BASELINES]
    rows = []
    for arm, others in a.pairs.items():
        twin = next((o for o in others if o not in columns), None)
        cells = ["–" if twin is None else f"{_est(a.pairs[arm][twin])} vs `{twin}`"]
        cells += [_est(a.pairs[arm][c]) if c in a.pairs[arm] else "–" for c in columns]
        rows.append([arm, *cells])
    lines = ["## LLM arms against their plain twins and the exploration baselines", "",
             f"Probability of improvement on the {a.metric.noun} (as above, 95% stratified-bootstrap interval) of "
             "each arm that asks an LLM over its *plain twin* (the arm without an LLM that runs the same algorithm) "
             "and over each exploration-baseline arm (NoisyNet-DQN, RND-DQN: DQN with another way to explore). "
             "Above 0.5: the LLM arm tends to score higher.", ""]
    lines += _table(["arm", f"P(arm > plain twin), {a.metric.short}",
                     *(f"P(arm > {c}) ({settings[c].get('algo')})" for c in columns)], rows)
    lines.append("")
    return lines


def _budget_section(a: Analysis) -> list[str]:
    """Per arm whose runs had an LLM budget (``explorer.budget``): how many reached it, and when."""
    arms = [arm for arm in a.study.arms if (a.cost.get(arm) or {}).get("budget_limited_runs")]
    if not arms:
        return []
    rows = []
    for arm in arms:
        c = a.cost[arm]
        rows.append([arm, f"{c['budget_reached_runs']} of {c['runs']}", _fmt(c["budget_episode"], 4),
                     _fmt(c["budget_step"], 4)])
    lines = ["### LLM budget", "",
             "Complete runs with a token or cost limit (`explorer.budget`) that reached it, and the median "
             "episode and env step at which their requests stopped; from then on each run explored with the "
             "update in force at the stop (see each run's `summary.json`, `budget`).", ""]
    lines += _table(["arm", "runs that reached the budget", "median episode", "median env step"], rows)
    lines.append("")
    return lines


def _markdown(a: Analysis, figure_paths: Sequence[Path]) -> str:
    import scipy

    study = a.study
    meta = study.meta
    m = a.metric
    runs = study.runs
    complete = sum(r.complete for r in runs)
    failed = [r for r in runs if r.status == "failed"]
    other = len(runs) - complete - len(failed)
    figs = {p.name for p in figure_paths}
    seeds = meta.get("seeds", [])
    lines = [f"# Ablation report: {meta.get('name', study.out.name)}", ""]
    if meta.get("description"):
        lines += [meta["description"].strip(), ""]
    lines += [
        f"Generated {time.strftime('%Y-%m-%d %H:%M')} from `{study.out}`. "
        f"{len(runs)} runs planned ({len(study.arms)} arms x {len(study.envs)} environments x {len(seeds)} seeds): "
        f"{complete} complete, {len(failed)} failed, {other} not run or interrupted.",
        "",
        f"Arms are compared on the **{m.noun}** (metric `{m.name}`): {m.definition}",
        "",
        "## Sample size",
        "",
        f"Seeds {', '.join(map(str, seeds))}: **{len(seeds)} per arm and environment**, paired across arms "
        "(every arm trains with the same environment and network-initialisation seed).",
        "",
    ]
    cells = a.runs_per_cell()
    lines += _table(["arm", *study.envs],
                    [[arm, *(str(cells[(arm, env)]) for env in study.envs)] for arm in study.arms])
    lines.append("")
    lines += [f"> **Warning:** {w}" + "\n" for w in a.warnings]

    if a.poi:
        lines += ["## Does an arm beat the baseline?", "",
                  f"Probability of improvement P(arm > {study.baseline}): the chance that a run of the arm has "
                  f"a higher {m.noun} than a run of the baseline on the same environment "
                  "(ties count half), averaged over environments, with a 95% stratified-bootstrap interval.", ""]
        lines += _table(["arm", f"P(arm > {study.baseline}), {m.short} [95% CI]", "reading"],
                        [[arm, _est(est), verdict(est)] for arm, est in a.poi.items()])
        lines.append("")

    lines += _pairs_section(a)
    lines += [f"## {m.title}", "",
              f"Interquartile mean (IQM) of the normalised {m.noun} over every run of every environment, "
              "with a 95% stratified-bootstrap interval (runs resampled within each environment).", ""]
    header = ["arm", f"IQM of normalised {m.short} [95% CI]", *(f"{env} mean ± sd (raw)" for env in study.envs)]
    rows = []
    for arm in study.arms:
        per_env = []
        for env in study.envs:
            values = a.raw[env][arm]
            if not values:
                per_env.append("–")
            elif len(values) == 1:
                per_env.append(_fmt(values[0], 4))
            else:
                per_env.append(f"{_fmt(float(np.mean(values)), 4)} ± {_fmt(float(np.std(values, ddof=1)), 3)}")
        rows.append([arm, _est(a.iqm[arm]), *per_env])
    lines += _table(header, rows)
    lines += ["", "Normalisation (score 0 -> 1):", ""]
    lines += _table(["environment", "0 =", "1 ="],
                    [[env, f"{_fmt(n.low, 4)} ({n.low_from})", f"{_fmt(n.high, 4)} ({n.high_from})"]
                     for env, n in a.normalisers.items()])
    lines.append("")
    if m.figure in figs:
        lines += [f"![{m.title}](figures/{m.figure})", ""]
    if "learning_curves.png" in figs:
        lines += ["## Learning curves", "",
                  "Greedy-evaluation return over env steps: mean over seeds with a 95% bootstrap band.", "",
                  "![Learning curves](figures/learning_curves.png)", ""]
    if "performance_profile.png" in figs:
        lines += ["## Performance profiles", "",
                  f"Fraction of runs whose normalised {m.noun} exceeds tau (higher is better everywhere).", "",
                  "![Performance profiles](figures/performance_profile.png)", ""]

    lines += _guidance_section(a)
    lines += ["## Cost", "",
              "Means per complete run. Latency is per exploration request (all stages and retries). *Informative "
              "updates*: applied updates distinguishable from the algorithm's own exploration (see *Exploration "
              "updates*).",
              ""]
    rows = []
    for arm in study.arms:
        c = a.cost.get(arm) or {}
        cost = c.get("cost_usd", math.nan)
        rows.append([arm, _fmt(c.get("llm_requests"), 4), _fmt(c.get("updates_applied"), 4),
                     _fmt(c.get("updates_informative"), 4),
                     _fmt(c.get("input_tokens"), 4),
                     _fmt(c.get("output_tokens"), 4), _fmt(c.get("latency_s"), 3), _fmt(c.get("fallbacks"), 3),
                     _fmt(c.get("wall_s"), 3), _fmt(c.get("steps_per_s"), 3),
                     "–" if math.isnan(cost) else f"${cost:.4f}"])
    lines += _table(["arm", "LLM requests", "updates applied", "informative updates", "input tokens",
                     "output tokens", "latency (s)", "fallbacks", "wall time (s)", "env steps/s", "cost (USD)"], rows)
    lines.append("")
    if not study.prices:
        lines += ["No price table in the spec (`prices:`), so no cost in USD.", ""]
    if "cost.png" in figs:
        lines += ["![Cost](figures/cost.png)", ""]
    lines += _budget_section(a)

    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            last = r.error.strip().splitlines()[-1] if r.error.strip() else "no output"
            log = f" (log: `{r.log}`)" if r.log else ""
            lines.append(f"- `{r.arm}/{r.env}/seed-{r.seed}`: {last.replace('|', '/')}{log}")
        lines.append("")

    lines += [
        "## Method",
        "",
        f"- Compared on the {m.noun} (metric `{m.name}`: the spec's `metric:` or `llm-explorer report --metric`; "
        "every run's final return, AUC and train mean are in `summary.csv`). "
        "*Final return*: the greedy-evaluation return at the end of training (`final_eval_return` in each "
        "run's `summary.json`). *AUC*: area under the greedy-evaluation curve divided by its "
        "step span. *Train mean* (`train_mean`): the mean return of every training episode.",
        f"- Statistics: SciPy {scipy.__version__} (`stats.trim_mean`, `stats.mannwhitneyu`, `stats.bootstrap` "
        f"with one sample per environment, percentile method, {RESAMPLES} resamples, "
        f"{int(CONFIDENCE * 100)}% level), the estimators of Agarwal et al. (NeurIPS 2021, rliable).",
        "- Per-run numbers: `summary.csv`; every run's own directory (manifest, metrics, exchanges) is under "
        "`runs/`.",
        "",
    ]
    return "\n".join(lines)
