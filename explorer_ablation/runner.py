"""Running a study: plan, skip what is complete, run the rest on a backend, record everything.

Each run's configuration is written to ``OUT/configs/ARM__ENV__seed-S.yaml`` before any run
starts; a run is ``TRAIN --config FILE --out OUT/runs/ARM/ENV/seed-S``.

A finished run is never redone. ``resume`` continues a study after a crash, a SIGKILL or
Ctrl-C: complete runs are kept, half-written ones continue from their newest checkpoint
(``train --resume``) or, without one, are moved aside and rerun. A failed run is recorded
(``status.jsonl``, with the tail of its log) and the study goes on.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer_pipeline.errors import UsageError
from explorer_rundir.format import read_json, write_json_atomic, write_text_atomic

from .backends import Backend
from .endpoint import jobs_env, open_endpoint, prepare_runs
from .launch import Job, Outcome
from .plan import PlannedRun, expand
from .progress import Progress, format_duration
from .spec import StudySpec
from .state import StatusLog, StudyLock
from .storage import StudyStorage, is_uri, open_study

__all__ = ["StudyResult", "emit_jobs", "job_command", "jobs_for", "plan_study", "run_study", "write_configs"]

Echo = Callable[[str], None]
PROGRESS_LINE_S = 300.0
"""At most one progress line per this many seconds from heartbeats alone."""


@dataclass
class StudyResult:
    """What :func:`run_study` did in this session."""

    out: Path
    total: int
    already_complete: int
    done: int
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Every run is complete and the session was not interrupted."""
        return not self.failed and not self.interrupted


def plan_study(spec: StudySpec, spec_path: Path | None) -> list[PlannedRun]:
    """Every run of ``spec``, with paths relative to the spec file's directory made absolute."""
    return expand(spec, spec_path.parent if spec_path is not None else None)


def jobs_for(runs: Sequence[PlannedRun], out: Path, *, train_command: Sequence[str] | None = None,
             cpus: int = 1) -> list[Job]:
    """One :class:`Job` per run, its files under the study directory ``out``. ``cpus`` is the
    default CPUs per run; a spec's or arm's ``resources.num_cpus`` replaces it."""
    out = out.resolve()
    return [_job(run, out, train_command, cpus) for run in runs]


def _job(run: PlannedRun, out: Path, train_command: Sequence[str] | None, cpus: int) -> Job:
    num_cpus = run.resources.get("num_cpus")
    memory = run.resources.get("memory_gb")
    return Job(run_id=run.run_id, arguments=tuple(run.arguments(out)), run_dir=out / run.relpath,
               log_path=out / run.log_relpath, steps=run.steps,
               train_command=tuple(train_command) if train_command else None,
               cpus=max(1, math.ceil(num_cpus)) if num_cpus else cpus,
               num_cpus=num_cpus if num_cpus else float(cpus), num_gpus=float(run.resources.get("num_gpus", 0.0)),
               memory_mb=round(memory * 1024) if memory else None)


def write_configs(out: Path, runs: Sequence[PlannedRun], study: str = "") -> None:
    """Write every run's configuration file (``OUT/configs/*.yaml``); an unchanged file is left
    as it is."""
    for run in runs:
        path = out / run.config_relpath
        text = run.config_yaml(study)
        try:
            if path.read_text(encoding="utf-8") == text:
                continue
        except OSError:
            pass
        write_text_atomic(path, text)


def run_study(
    spec: StudySpec,
    out: Path | str,
    backend: Backend,
    *,
    spec_path: Path | None = None,
    resume: bool = False,
    train_command: Sequence[str] | None = None,
    echo: Echo | None = None,
) -> StudyResult:
    """Run every incomplete run of ``spec`` into ``out``. Raises :class:`UsageError` when ``out``
    already holds a study and ``resume`` is off, or when the spec changed for runs that already
    finished.

    ``out`` is a directory or a URI (``s3://...``: :mod:`.storage`, Ray backend only): then the
    driver's files are kept in a local directory and uploaded, runs train where they run and are
    uploaded at each checkpoint, and whether a run is complete is read from the storage.

    :param echo: receives each progress line (default: written to stderr).
    """
    echo = echo or _to_stderr
    t0 = time.monotonic()
    store = open_study(out)
    if store.remote is not None and not hasattr(backend, "storage"):
        raise UsageError(f"--out {store.where!r} is a URI: studies on fsspec storage run on the Ray backend "
                         "(--backend ray); the local backend needs a directory")
    out = store.local
    runs = plan_study(spec, spec_path)
    runs = prepare_runs(spec, runs, out, spec_path.parent.resolve() if spec_path is not None else None)
    with StudyLock(out):
        store.pull()
        previous = read_json(out / "study.json")
        _check_can_start(out, previous, runs, resume, store)
        backend.setup()
        served = None
        try:
            _write_study(out, spec, spec_path, runs, previous, backend)
            write_configs(out, runs, spec.name)
            store.push("study.json", "spec.yaml", "configs")
            status = StatusLog(out / "status.jsonl", mirror=store.push_status if store.remote else None)
            jobs = jobs_for(runs, out, train_command=train_command, cpus=backend.cpus_per_run)
            todo = [job for job in jobs if not store.run_is_complete(store.relpath(job.run_dir), job.steps)]
            if hasattr(backend, "storage"):
                backend.storage = store
            already = len(jobs) - len(todo)
            if todo:  # the study's LLM endpoint and ledger (:mod:`.endpoint`), stopped in the finally
                served = open_endpoint(spec, out, backend, spec_path.parent.resolve() if spec_path else None, echo)
                backend.env = {**getattr(backend, "env", {}), **served.env}  # type: ignore[attr-defined]
            progress = Progress(total=len(jobs), done=already, workers=max(1, backend.workers or 1))
            preflight = getattr(backend, "preflight", None)
            if preflight is not None and todo:
                nodes = preflight(out, todo)
                if nodes:
                    echo(f"preflight: {len(nodes)} node(s) import the project and see the study directory")
            status.append("session", backend=backend.name, workers=backend.workers, to_run=len(todo),
                          already_complete=already, argv=sys.argv)
            echo(f"study {spec.name!r}: {len(jobs)} runs ({len(spec.arms)} arms x {len(spec.environments)} envs x "
                 f"{len(spec.seeds)} seeds), {already} already complete, {len(todo)} to run "
                 f"on the {backend.name} backend -> {store.where}")
            result = StudyResult(out, len(jobs), already, already)
            events = _Events(status, progress, echo, result)
            try:
                backend.run(todo, events)
            except KeyboardInterrupt:
                result.interrupted = True
                status.append("stopped", reason="interrupted")
                echo(f"stopped: {progress.line()}; continue with --resume")
            result.done = progress.done
            result.wall_s = time.monotonic() - t0
            status.append("end", done=progress.done, failed=len(result.failed), interrupted=result.interrupted,
                          wall_s=round(result.wall_s, 1))
        finally:
            if served is not None:
                served.close()
            backend.close()
        return result


def job_command(job: Job, python: str | None = None) -> list[str]:
    """The stand-alone command for one run (:mod:`.job`): resumes or starts it, leaves it alone
    when complete."""
    config = job.arguments[job.arguments.index("--config") + 1]
    command = [python or sys.executable, "-m", "explorer_ablation.job", "--config", config, "--out", str(job.run_dir),
               "--log", str(job.log_path), "--threads", str(job.cpus)]
    if job.steps is not None:
        command += ["--steps", str(job.steps)]
    return command


def emit_jobs(spec: StudySpec, out: Path, jobs_file: Path, *, spec_path: Path | None = None, resume: bool = False,
              cpus: int = 1, python: str | None = None) -> int:
    """Write the study directory's ``study.json`` and every run's configuration, and ``jobs_file``:
    one run per line, for a SLURM array (line N is task N-1) or any other scheduler. A ``.jsonl``
    file gets one JSON object per run (``run``, ``command``, ``config``, ``run_dir``,
    ``resources``); any other name one shell command per line. Nothing runs. Returns the number
    of runs."""
    import json
    import shlex
    from types import SimpleNamespace

    if is_uri(str(out)):
        raise UsageError(f"--emit-jobs needs a directory every node mounts for --out, not the URI {str(out)!r}: "
                         "its jobs write their run directories in place")
    out = Path(out).resolve()
    runs = plan_study(spec, spec_path)
    runs = prepare_runs(spec, runs, out, spec_path.parent.resolve() if spec_path is not None else None)
    with StudyLock(out):
        previous = read_json(out / "study.json")
        _check_can_start(out, previous, runs, resume)
        env = jobs_env(spec, out)  # the study's ledger and a url endpoint's shared limit, for every job
        emitter = SimpleNamespace(name="emit-jobs", workers=0)
        _write_study(out, spec, spec_path, runs, previous, emitter)  # type: ignore[arg-type]
        write_configs(out, runs, spec.name)
        lines = []
        for run, job in zip(runs, jobs_for(runs, out, cpus=cpus), strict=True):
            uses_llm = (run.config.get("explorer") or {}).get("provider") not in ("none", None)
            prefix = ["env", *(f"{k}={v}" for k, v in sorted(env.items()))] if env and uses_llm else []
            command = shlex.join(prefix + job_command(job, python))
            if jobs_file.suffix == ".jsonl":
                lines.append(json.dumps({"run": run.run_id, "command": command, "config": str(out / run.config_relpath),
                                         "run_dir": str(job.run_dir), "resources": run.resources,
                                         "env": env if uses_llm else {}}))
            else:
                lines.append(command)
        write_text_atomic(jobs_file, "".join(line + "\n" for line in lines))
        StatusLog(out / "status.jsonl").append("emitted", jobs_file=str(jobs_file.resolve()), runs=len(runs))
    return len(runs)


def _to_stderr(line: str) -> None:
    """The default ``echo``: one line on stderr, flushed."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Events:
    def __init__(self, status: StatusLog, progress: Progress, echo: Echo, result: StudyResult) -> None:
        self.status, self.progress, self.echo, self.result = status, progress, echo, result
        self._last_line = time.monotonic()

    def started(self, job: Job, pid: int | None) -> None:
        self.progress.start(job.run_id)
        self.status.append("started", job.run_id, pid=pid)
        self.echo(f"{self.progress.line()} started {job.run_id}")

    def note(self, kind: str, run_id: str, fields: dict[str, Any]) -> None:
        if kind == "started":
            self.progress.start(run_id)
            self.status.append("started", run_id, **fields)
            how = " (resumed from its checkpoint)" if fields.get("resume") else ""
            attempt = fields.get("attempt", 1)
            again = f", attempt {attempt}" if attempt and attempt > 1 else ""
            self.echo(f"{self.progress.line()} started {run_id} on {fields.get('host', '?')}{again}{how}")
        elif kind == "heartbeat":
            self.progress.beat(run_id, fields)
            self.status.append("heartbeat", run_id, **fields)
            if time.monotonic() - self._last_line >= PROGRESS_LINE_S:
                self._last_line = time.monotonic()
                self.echo(f"{self.progress.line()} running")
        elif kind != "skipped":  # a skipped run is reported by finished()
            self.status.append(kind, run_id, **fields)

    def finished(self, outcome: Outcome) -> None:
        ok = outcome.complete
        if outcome.interrupted:
            self.progress.stop(outcome.run_id)
            self.status.append("interrupted", outcome.run_id, rc=outcome.returncode, wall_s=round(outcome.wall_s, 2))
            self.echo(f"{self.progress.line()} interrupted {outcome.run_id}")
            return
        self.progress.finish(outcome.run_id, ok, outcome.wall_s)
        fields: dict[str, Any] = {"rc": outcome.returncode, "wall_s": round(outcome.wall_s, 2)}
        if outcome.moved_aside:
            fields["moved_aside"] = outcome.moved_aside
        if outcome.host:
            fields["host"] = outcome.host
        fields.update(outcome.details)
        if ok:
            self.status.append("done", outcome.run_id, **fields)
            if outcome.details.get("already_complete"):
                self.echo(f"{self.progress.line()} {outcome.run_id} was already complete where it runs")
            else:
                self.echo(f"{self.progress.line()} done {outcome.run_id} in {format_duration(outcome.wall_s)}")
        else:
            self.result.failed.append(outcome.run_id)
            self.status.append("failed", outcome.run_id, error=outcome.error, **fields)
            last = outcome.error.strip().splitlines()[-1] if outcome.error.strip() else "no output"
            self.echo(f"{self.progress.line()} FAILED {outcome.run_id} (exit {outcome.returncode}): {last}")


def _check_can_start(out: Path, previous: Any, runs: Sequence[PlannedRun], resume: bool,
                     store: StudyStorage | None = None) -> None:
    store = store or StudyStorage(out)
    if not resume:
        if previous is not None or store.has_runs():
            raise UsageError(f"{store.where!r} already holds a study: pass --resume to continue it, "
                             "or choose another --out")
        return
    if not isinstance(previous, dict):
        return
    old_runs = previous.get("runs", {})
    changed = [run.run_id for run in runs
               if run.run_id in old_runs and old_runs[run.run_id].get("fingerprint") != run.fingerprint
               and store.run_is_complete(run.relpath.as_posix(), _old_steps(old_runs[run.run_id]))]
    if changed:
        listing = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise UsageError(f"the spec changed for runs that already finished in {store.where!r} ({listing}); "
                         "use another --out, or delete those run directories to redo them")


def _old_steps(info: dict[str, Any]) -> int | None:
    steps = (info.get("config") or info.get("settings") or {}).get("steps")
    return steps if isinstance(steps, int) else None


def _write_study(out: Path, spec: StudySpec, spec_path: Path | None, runs: Sequence[PlannedRun],
                 previous: Any, backend: Backend) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    previous = previous if isinstance(previous, dict) else {}
    sessions = list(previous.get("sessions", []))
    sessions.append({"started": now, "backend": backend.name, "workers": backend.workers, "argv": sys.argv})
    study = {
        "format": 2,
        "name": spec.name,
        "description": spec.description,
        "spec_file": str(spec_path.resolve()) if spec_path is not None else None,
        "created": previous.get("created", now),
        "sessions": sessions,
        "baseline": spec.baseline_arm,
        "arms": [arm.name for arm in spec.arms],
        "environments": [env.model_dump(mode="json") for env in spec.environments],
        "seeds": list(spec.seeds),
        "prices": {k: v.model_dump(mode="json") for k, v in spec.prices.items()},
        "metric": spec.metric,
        "spec": spec.model_dump(mode="json", exclude_defaults=True),
        "runs": {run.run_id: run.to_json() for run in runs},
    }
    write_json_atomic(out / "study.json", study)
    if spec_path is not None and spec_path.resolve() != (out / "spec.yaml").resolve():
        shutil.copyfile(spec_path, out / "spec.yaml")
