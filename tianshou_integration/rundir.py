"""The run directory, written incrementally and atomically.

=====================  ===========================================================================
``manifest.json``      config, package versions, git commit, plugins and prompt hashes, seed
``metrics.csv``        ``step,train_return,eval_return``: one row per training episode or evaluation
``updates.jsonl``      one line per exploration update (``source`` llm/control) or failed request
                       (``source`` fallback, with ``reason``), with ``applied_at_step``
``tensorboard/``       TensorBoard event files
``learning_curve.png`` training and greedy-evaluation returns over env steps
``exploration.png``    the exploration distribution / bias of each update
``summary.json``       counters and results, written at the end (also after Ctrl-C)
=====================  ===========================================================================

JSON files are written to a temporary file and moved into place (``os.replace``), so a crash
never leaves a half-written one; CSV and JSONL lines are appended and flushed one at a time.
Update and failure callbacks arrive on the explorer's event-loop thread; everything else on
the training thread. A lock serialises the two.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ExplorationUpdate, RequestFailure

log = logging.getLogger(__name__)

__all__ = ["RunDir", "collect_versions", "git_commit", "write_json_atomic"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file in the same directory."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def _finite_or_none(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def collect_versions() -> dict[str, str]:
    """Versions of the interpreter and the packages a result depends on."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "tianshou", "gymnasium", "numpy", "langchain-core", "pluggy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    for dist in ("llm-explorer", "llm_explorer"):
        try:
            versions["explorer"] = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    else:
        versions["explorer"] = "unknown (not installed as a distribution)"
    return versions


def git_commit(directory: Path | None = None) -> dict[str, Any] | None:
    """The commit of the checkout that holds this package (and whether it has local changes)."""
    directory = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None


class RunDir:
    """One run's output directory.

    :param path: created if missing.
    :param tensorboard: write TensorBoard events (needs the ``tensorboard`` package).
    """

    def __init__(self, path: str | Path, *, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._cache: ExplorationCache | None = None
        self._pending: dict[int, tuple[ExplorationUpdate, float]] = {}
        self.updates: list[dict[str, Any]] = []  # every line written to updates.jsonl
        self.train_points: list[tuple[int, float]] = []
        self.eval_points: list[tuple[int, float]] = []
        self.fallbacks = 0
        self.applied_versions: set[int] = set()
        self._closed = False

        new_metrics = not (self.path / "metrics.csv").exists()
        self._metrics_f = open(self.path / "metrics.csv", "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._metrics = csv.writer(self._metrics_f)
        if new_metrics:
            self._metrics.writerow(["step", "train_return", "eval_return"])
            self._metrics_f.flush()
        self._updates_f = open(self.path / "updates.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.path / "tensorboard"))
            except Exception as exc:  # tensorboard not installed or unwritable
                log.warning("TensorBoard logging disabled: %s", exc)

    # ------------------------------------------------------------------ manifest / summary
    def write_manifest(self, config: Mapping[str, Any], *, seed: int,
                       explorer: Mapping[str, Any] | None = None) -> dict[str, Any]:
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": sys.argv,
            "seed": seed,
            "config": dict(config),
            "versions": collect_versions(),
            "git": git_commit(),
            "platform": platform.platform(),
            "explorer": dict(explorer) if explorer is not None else None,
        }
        write_json_atomic(self.path / "manifest.json", manifest)
        if self._tb is not None:
            text = json.dumps(manifest["config"], indent=2, default=_json_default)
            self._tb.add_text("config", f"```\n{text}\n```")
        return manifest

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        write_json_atomic(self.path / "summary.json", dict(summary))

    # ------------------------------------------------------------------ metrics (training thread)
    def log_train_episode(self, step: int, episode_return: float) -> None:
        self.train_points.append((step, float(episode_return)))
        self._metrics.writerow([step, f"{episode_return:.6g}", ""])
        self._metrics_f.flush()
        if self._tb is not None:
            self._tb.add_scalar("train/episode_return", episode_return, step)

    def log_eval(self, step: int, mean_return: float) -> None:
        self.eval_points.append((step, float(mean_return)))
        self._metrics.writerow([step, "", f"{mean_return:.6g}"])
        self._metrics_f.flush()
        if self._tb is not None:
            self._tb.add_scalar("eval/return_mean", mean_return, step)
            self._tb.flush()

    # ------------------------------------------------------------------ exploration updates
    def track(self, cache: ExplorationCache) -> None:
        """Read ``applied_at`` from ``cache`` for the update lines."""
        self._cache = cache

    def on_update(self, update: ExplorationUpdate) -> None:
        """Runtime ``on_update`` callback (loop thread): hold the update until it is applied."""
        with self._lock:
            # a newer update supersedes older pending ones: write those now (applied or not)
            for version in sorted(v for v in self._pending if v < update.version):
                self._write_update_locked(*self._pending.pop(version))
            self._pending[update.version] = (update, self._elapsed())

    def on_failure(self, failure: RequestFailure) -> None:
        """Runtime ``on_failure`` callback (loop thread): a ``fallback`` line, cache unchanged."""
        with self._lock:
            self.fallbacks += 1
            current = self._cache.current() if self._cache is not None else None
            line = {
                "version": current.version if current is not None else None,
                "kind": current.kind if current is not None else None,
                "values": list(current.values) if current is not None else None,
                "source": "fallback",
                "applied_at_step": None,
                "latency_s": round(failure.latency_s, 4),
                "reason": failure.reason,
                "detail": failure.detail,
                "source_episode": failure.source_episode,
                "attempts": failure.attempts,
                "tokens": {k: {"input": v.input_tokens, "output": v.output_tokens} for k, v in failure.tokens.items()},
                "t_s": round(self._elapsed(), 3),
            }
            self._append_locked(line)

    def poll(self, step: int) -> None:
        """Training thread, after each collect: write pending updates that have been applied."""
        if not self._pending or self._cache is None:
            return
        with self._lock:
            for version in sorted(self._pending):
                at = self._cache.applied_at(version)
                if at is not None:
                    update, t = self._pending.pop(version)
                    self._write_update_locked(update, t)
                    if self._tb is not None:
                        self._tb.add_scalar("explorer/updates_applied", len(self.applied_versions), at)
                        for i, value in enumerate(update.values):
                            self._tb.add_scalar(f"explorer/{update.kind}_{i}", value, at)

    def _write_update_locked(self, update: ExplorationUpdate, t: float) -> None:
        line = update.to_json()
        at = self._cache.applied_at(update.version) if self._cache is not None else None
        if at is not None:
            self.applied_versions.add(update.version)
        line["applied_at_step"] = at
        line["t_s"] = round(t, 3)
        self._append_locked(line)

    def _append_locked(self, line: dict[str, Any]) -> None:
        self.updates.append(line)
        if self._closed:
            return
        self._updates_f.write(json.dumps(line, default=_json_default) + "\n")
        self._updates_f.flush()

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    @property
    def updates_applied(self) -> int:
        """Updates written as applied, plus pending ones the collector has already used."""
        pending_applied = 0
        if self._cache is not None:
            pending_applied = sum(1 for v in list(self._pending) if self._cache.applied_at(v) is not None)
        return len(self.applied_versions) + pending_applied

    # ------------------------------------------------------------------ plots
    def write_plots(self, title: str = "", labels: tuple[str, ...] | list[str] = ()) -> None:
        """``learning_curve.png`` and ``exploration.png`` (matplotlib, Agg backend).

        :param labels: one name per action / dimension for the exploration plot's legend.
        """
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except Exception as exc:
            log.warning("plots skipped: %s", exc)
            return
        self._plot_learning_curve(plt, title)
        self._plot_exploration(plt, title, tuple(labels))

    def _save(self, plt: Any, fig: Any, name: str) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".png", dir=self.path)
        os.close(fd)
        try:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
            os.replace(tmp, self.path / name)
        finally:
            plt.close(fig)
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _plot_learning_curve(self, plt: Any, title: str) -> None:
        fig, ax = plt.subplots(figsize=(7, 4))
        if self.train_points:
            xs, ys = zip(*self.train_points, strict=True)
            ax.plot(xs, ys, ".", alpha=0.25, markersize=3, label="training episode")
            window = max(1, len(ys) // 20)
            if window > 1:
                smooth = [sum(ys[max(0, i - window + 1):i + 1]) / len(ys[max(0, i - window + 1):i + 1])
                          for i in range(len(ys))]
                ax.plot(xs, smooth, "-", linewidth=1, label=f"training (mean of {window})")
        if self.eval_points:
            xs, ys = zip(*self.eval_points, strict=True)
            ax.plot(xs, ys, "o-", linewidth=2, label="greedy evaluation")
        ax.set_xlabel("env step")
        ax.set_ylabel("return")
        ax.set_title(title or "learning curve")
        if self.train_points or self.eval_points:
            ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        self._save(plt, fig, "learning_curve.png")

    def _plot_exploration(self, plt: Any, title: str, labels: tuple[str, ...]) -> None:
        updates = [u for u in self.updates if u.get("source") != "fallback" and u.get("values")]
        applied = [u for u in updates if u.get("applied_at_step") is not None]
        fig, ax = plt.subplots(figsize=(7, 4))
        if updates:
            # what the collector used, over env steps; publication order when nothing was applied
            shown = applied or updates
            xs = [u["applied_at_step"] for u in applied] if applied else list(range(1, len(updates) + 1))
            width = len(shown[0]["values"])
            unit = "action" if shown[0]["kind"] == "distribution" else "dimension"
            for i in range(width):
                name = labels[i] if len(labels) == width else f"{unit} {i}"
                ax.step(xs, [u["values"][i] if i < len(u["values"]) else float("nan") for u in shown],
                        where="post", label=name)
            ax.set_xlabel("env step (update first applied)" if applied else "update (in publication order)")
            ax.set_ylabel("probability" if updates[0]["kind"] == "distribution" else "bias (normalised units)")
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no exploration updates", ha="center", va="center", transform=ax.transAxes)
        fallbacks = sum(1 for u in self.updates if u.get("source") == "fallback")
        ax.set_title((title + " - " if title else "") + f"exploration ({len(updates)} updates, {fallbacks} fallbacks)")
        ax.grid(alpha=0.3)
        self._save(plt, fig, "exploration.png")

    # ------------------------------------------------------------------ close
    def flush_pending(self) -> None:
        """Write every held update (applied or not). Call after the runtime has stopped."""
        with self._lock:
            for version in sorted(self._pending):
                self._write_update_locked(*self._pending.pop(version))

    def close(self) -> None:
        if self._closed:
            return
        self.flush_pending()
        with self._lock:
            self._closed = True
            self._metrics_f.close()
            self._updates_f.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def finite(x: float | None) -> float | None:
        return _finite_or_none(x)
