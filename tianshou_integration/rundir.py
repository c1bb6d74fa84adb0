"""The run directory, written incrementally and atomically.

=====================  ===========================================================================
``manifest.json``      config, package versions, git commit, plugins and prompt hashes, seed
``metrics.csv``        ``step,train_return,eval_return``: one row per training episode or evaluation
``updates.jsonl``      one line per exploration update (``source`` llm/control) or failed request
                       (``source`` fallback, with ``reason``), with ``applied_at_step``; update
                       lines also carry how informative the update was and how stale its
                       evidence was when it took effect (:mod:`explorer_rundir.informativeness`)
``tensorboard/``       TensorBoard event files
``learning_curve.png`` training and greedy-evaluation returns over env steps
``exploration.png``    the distribution / bias of each update, its informativeness against the
                       threshold, and its staleness
``summary.json``       counters and results, written at the end (also after Ctrl-C); the caller
                       merges in :meth:`RunDir.guidance_summary`
=====================  ===========================================================================

Staleness needs the env step at which each update's source episode ended: :meth:`RunDir.log_train_episode`
is called once per training episode, in episode-index order (the episode tap's order), so the
``k``-th call's step is the end of episode ``k``.

JSON files are written to a temporary file and moved into place (``os.replace``), so a crash
never leaves a half-written one; CSV and JSONL lines are appended and flushed one at a time.
Update and failure callbacks arrive on the explorer's event-loop thread; everything else on
the training thread. A lock serialises the two.

Resuming from a checkpoint (``RunDir(path, resume=...)``): ``metrics.csv``, ``updates.jsonl`` and
``exchanges.jsonl`` are cut back to their length at the checkpoint (:meth:`RunDir.checkpoint_state`),
what is kept is read back, TensorBoard hides the events logged after the checkpoint's step, and
writing goes on from there.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from explorer_pipeline.cache import ExplorationCache
from explorer_pipeline.types import ExplorationUpdate, RequestFailure
from explorer_rundir import informativeness
from explorer_rundir.format import (
    CONFIG_FILE,
    EXCHANGES_FILE,
    MANIFEST_FILE,
    METRICS_COLUMNS,
    METRICS_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    UPDATES_FILE,
    json_default,
    read_json,
    read_summary,
    run_is_complete,
    write_json_atomic,
)

from . import rundir_figures

log = logging.getLogger(__name__)

__all__ = ["RunDir", "collect_versions", "git_commit", "occupied_message", "resume_problem", "write_json_atomic"]


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
    :param resume: continue a run from a checkpoint: :meth:`checkpoint_state` of that moment,
        plus ``step``, the checkpoint's env step.
    """

    def __init__(self, path: str | Path, *, tensorboard: bool = True, resume: Mapping[str, Any] | None = None) -> None:
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
        self.informative_versions: set[int] = set()  # applied and informative
        self._episode_end_steps: list[int] = []  # by episode index
        self._previous_values: tuple[float, ...] | None = None  # the last update written (publication order)
        self._closed = False
        if resume is not None:
            self._resume(resume)

        new_metrics = not (self.path / METRICS_FILE).exists()
        self._metrics_f = open(self.path / METRICS_FILE, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self._metrics = csv.writer(self._metrics_f)
        if new_metrics:
            self._metrics.writerow(METRICS_COLUMNS)
            self._metrics_f.flush()
        self._updates_f = open(self.path / UPDATES_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = int(resume["step"]) if resume is not None else None  # hide events after the checkpoint
                self._tb = SummaryWriter(log_dir=str(self.path / TENSORBOARD_DIR), purge_step=purge)
            except Exception as exc:  # tensorboard not installed or unwritable
                log.warning("TensorBoard logging disabled: %s", exc)

    # ------------------------------------------------------------------ manifest / summary
    def write_manifest(self, config: Mapping[str, Any], *, seed: int,
                       explorer: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Write ``manifest.json`` (configuration, versions, git commit, platform, explorer); returns it."""
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
        write_json_atomic(self.path / MANIFEST_FILE, manifest)
        if self._tb is not None:
            text = json.dumps(manifest["config"], indent=2, default=json_default)
            self._tb.add_text("config", f"```\n{text}\n```")
        return manifest

    def note_resume(self, entry: Mapping[str, Any]) -> None:
        """Append ``entry`` (the checkpoint's step, what it does not restore exactly) to the
        manifest's ``resumes``, with the time, command, versions and git commit of this session."""
        manifest = read_json(self.path / MANIFEST_FILE)
        if not isinstance(manifest, dict):
            manifest = {}
        manifest.setdefault("resumes", []).append({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": sys.argv, "versions": collect_versions(),
            "git": git_commit(), **dict(entry)})
        write_json_atomic(self.path / MANIFEST_FILE, manifest)

    def note_replay(self, entry: Mapping[str, Any]) -> None:
        """Record in the manifest (``replay_schedule``) which run's update schedule this run replays."""
        manifest = read_json(self.path / MANIFEST_FILE)
        manifest = manifest if isinstance(manifest, dict) else {}
        manifest["replay_schedule"] = dict(entry)
        write_json_atomic(self.path / MANIFEST_FILE, manifest)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write ``summary.json``: last, since a run directory with a summary is complete."""
        write_json_atomic(self.path / SUMMARY_FILE, dict(summary))

    # ------------------------------------------------------------------ metrics (training thread)
    def log_train_episode(self, step: int, episode_return: float) -> None:
        """One finished training episode, in episode-index order; ``step``: the env step it ended at."""
        self.train_points.append((step, float(episode_return)))
        self._episode_end_steps.append(int(step))
        self._metrics.writerow([step, f"{episode_return:.6g}", ""])
        self._metrics_f.flush()
        if self._tb is not None:
            self._tb.add_scalar("train/episode_return", episode_return, step)

    def log_eval(self, step: int, mean_return: float) -> None:
        """One greedy evaluation: its mean return at env step ``step``."""
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

    def _measured_line(self, update: ExplorationUpdate, previous: tuple[float, ...] | None) -> dict[str, Any]:
        """``update``'s line: provenance, when it was applied, informativeness and staleness."""
        line = update.to_json()
        at = self._cache.applied_at(update.version) if self._cache is not None else None
        line["applied_at_step"] = at
        if previous is None and self._cache is not None:
            previous = self._cache.default.values
        try:
            line.update(informativeness.measure(update.kind, update.values, previous))
        except ValueError as exc:  # not a valid update of its kind: record it, never fail the run
            log.warning("update %d: informativeness not measured: %s", update.version, exc)
            line["informative"] = False
        source = update.provenance.source_episode
        line.update(informativeness.staleness(source if source >= 0 else None, at, self._episode_end_steps))
        return line

    def _write_update_locked(self, update: ExplorationUpdate, t: float) -> None:
        line = self._measured_line(update, self._previous_values)
        self._previous_values = update.values
        at = line["applied_at_step"]
        if at is not None:
            self.applied_versions.add(update.version)
            if line["informative"]:
                self.informative_versions.add(update.version)
        line["t_s"] = round(t, 3)
        self._append_locked(line)
        if at is not None and self._tb is not None and not self._closed:
            self._tb_update_locked(line, at)

    def _tb_update_locked(self, line: dict[str, Any], at: int) -> None:
        tb = self._tb
        tb.add_scalar("explorer/updates_applied", len(self.applied_versions), at)
        tb.add_scalar("explorer/updates_informative", len(self.informative_versions), at)
        tb.add_scalar("explorer/informative", float(line["informative"]), at)
        for i, value in enumerate(line["values"]):
            tb.add_scalar(f"explorer/{line['kind']}_{i}", value, at)
        for key in (*informativeness.MEASURE_KEYS[line["kind"]], "staleness_episodes", "staleness_steps"):
            if line.get(key) is not None:
                tb.add_scalar(f"explorer/{key}", line[key], at)

    def _append_locked(self, line: dict[str, Any]) -> None:
        self.updates.append(line)
        if self._closed:
            return
        self._updates_f.write(json.dumps(line, default=json_default) + "\n")
        self._updates_f.flush()

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_state(self) -> dict[str, Any]:
        """Where the files stand and what is held back, for a checkpoint. Call where no line is
        being written: on the explorer's loop thread (between two callbacks) or without one."""
        with self._lock:
            self._metrics_f.flush()
            self._updates_f.flush()
            exchanges = self.path / EXCHANGES_FILE
            return {
                "metrics_bytes": os.fstat(self._metrics_f.fileno()).st_size,
                "updates_bytes": os.fstat(self._updates_f.fileno()).st_size,
                "exchanges_bytes": exchanges.stat().st_size if exchanges.exists() else 0,
                "elapsed_s": self._elapsed(),
                "pending": [self._pending[v] for v in sorted(self._pending)],
            }

    def _resume(self, state: Mapping[str, Any]) -> None:
        """Cut the files back to ``state`` and read back what they hold (before they are opened)."""
        for name, key in ((METRICS_FILE, "metrics_bytes"), (UPDATES_FILE, "updates_bytes"),
                          (EXCHANGES_FILE, "exchanges_bytes")):
            file = self.path / name
            size = int(state[key])
            have = file.stat().st_size if file.exists() else 0
            if have < size:
                raise ValueError(f"{file} has {have} bytes, fewer than the {size} it had at the checkpoint")
            if file.exists():
                os.truncate(file, size)
        with open(self.path / METRICS_FILE, newline="", encoding="utf-8") as f:
            for row in list(csv.reader(f))[1:]:
                step, train_return, eval_return = int(row[0]), row[1], row[2]
                if train_return:
                    self.train_points.append((step, float(train_return)))
                    self._episode_end_steps.append(step)
                else:
                    self.eval_points.append((step, float(eval_return)))
        with open(self.path / UPDATES_FILE, encoding="utf-8") as f:
            for raw in f:
                line = json.loads(raw)
                self.updates.append(line)
                if line.get("source") == "fallback":
                    self.fallbacks += 1
                    continue
                self._previous_values = tuple(line["values"])
                if line.get("applied_at_step") is not None:
                    self.applied_versions.add(line["version"])
                    if line.get("informative"):
                        self.informative_versions.add(line["version"])
        self._t0 = time.perf_counter() - float(state["elapsed_s"])
        self._pending = {update.version: (update, t) for update, t in state["pending"]}

    @property
    def updates_applied(self) -> int:
        """Updates written as applied, plus pending ones the collector has already used."""
        pending_applied = 0
        if self._cache is not None:
            pending_applied = sum(1 for v in list(self._pending) if self._cache.applied_at(v) is not None)
        return len(self.applied_versions) + pending_applied

    @property
    def updates_informative(self) -> int:
        """Applied updates that clear the informativeness threshold (a subset of :attr:`updates_applied`)."""
        pending_informative = 0
        if self._cache is not None:
            pending_informative = sum(1 for v, (u, _) in list(self._pending.items())
                                      if self._cache.applied_at(v) is not None
                                      and informativeness.is_informative(u.kind, u.values))
        return len(self.informative_versions) + pending_informative

    def guidance_summary(self) -> dict[str, Any]:
        """The guidance fields for ``summary.json`` (:func:`explorer_rundir.informativeness.summarise`).

        ``updates_informative``, ``informative_share`` (of applied updates; None when none was
        applied), ``informative_threshold`` (``{"metric", "min", "unit"}``), ``guidance_kind``, and
        ``median_<measure>`` over applied updates: ``entropy_norm``, ``kl_uniform_nats`` and
        ``change_tv`` (discrete) or ``bias_max_abs``, ``bias_rms`` and ``change_max_abs``
        (continuous), plus ``staleness_episodes`` and ``staleness_steps``. Updates still held back
        count when the collector has used them, as in :attr:`updates_applied`.
        """
        with self._lock:
            lines = list(self.updates)
            previous = self._previous_values
            for version in sorted(self._pending):
                update = self._pending[version][0]
                lines.append(self._measured_line(update, previous))
                previous = update.values
        kind = self._cache.spec.update_kind if self._cache is not None else None
        return informativeness.summarise(lines, kind)

    # ------------------------------------------------------------------ plots
    def write_plots(self, title: str = "", labels: tuple[str, ...] | list[str] = ()) -> None:
        """``learning_curve.png`` and ``exploration.png`` (:mod:`tianshou_integration.rundir_figures`).

        :param labels: one name per action / dimension for the exploration plot's legend.
        """
        rundir_figures.write_plots(self.path, self.train_points, self.eval_points, self.updates, title=title,
                                   labels=labels)

    # ------------------------------------------------------------------ close
    def flush_pending(self) -> None:
        """Write every held update (applied or not). Call after the runtime has stopped."""
        with self._lock:
            for version in sorted(self._pending):
                self._write_update_locked(*self._pending.pop(version))

    def close(self) -> None:
        """Write held updates, close the files and TensorBoard; closing twice is harmless."""
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
        """``x`` as a float, or None when it is None, NaN or infinite (JSON has no NaN)."""
        return _finite_or_none(x)


def resume_problem(out: str | Path) -> str | None:
    """Why ``out`` cannot be resumed (not a run directory, or a finished run), or None."""
    out = Path(out)
    if not out.is_dir():
        return f"{str(out)!r} is not a run directory (it does not exist)"
    missing = [name for name in (CONFIG_FILE, MANIFEST_FILE) if not (out / name).is_file()]
    if missing:
        return f"{str(out)!r} is not a run directory (no {' or '.join(missing)})"
    if run_is_complete(out):
        summary = read_summary(out) or {}
        return (f"the run in {str(out)!r} is finished ({summary.get('env_steps')} env steps); there is nothing "
                "to resume (replay it with --replay-schedule, or start a new run with another --out)")
    return None


def occupied_message(out: str | Path) -> str:
    """The error for a run directory that would be overwritten, with what to do instead."""
    out = Path(out)
    if (out / CONFIG_FILE).is_file() and not run_is_complete(out):
        return (f"run directory {str(out)!r} already holds an unfinished run; continue it with "
                f"llm-explorer train --resume {out}, or choose another --out")
    if run_is_complete(out):
        return (f"run directory {str(out)!r} already holds a finished run; choose another --out "
                "(--resume continues only unfinished runs)")
    return (f"run directory {str(out)!r} already exists and is not empty; choose another --out "
            f"(to continue an unfinished run there: llm-explorer train --resume {out})")
