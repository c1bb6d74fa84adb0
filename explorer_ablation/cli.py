"""``llm-explorer ablate`` and ``llm-explorer report``. Only click, the core's errors and the
metric names (:mod:`.metrics`) are imported at module level, so ``llm-explorer --help`` stays
fast; the work is done by :mod:`.runner` and :mod:`.report`.

Exit status: 0 everything complete; 1 some run failed (the study still ran every other run) or
the report could not be written; 2 bad input (spec, options, study directory) before anything
ran, reported as :class:`~explorer_pipeline.errors.BadInput` like every other command; 130
stopped by Ctrl-C or SIGTERM (``--resume`` continues).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from explorer_pipeline.errors import BadInput

from .metrics import METRIC_NAMES

__all__ = ["ablate", "report", "status"]

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130


class _StudyArg(click.ParamType):
    """A study: an existing directory, or a URI on a storage (``s3://...``, ``file://...``)."""

    name = "DIR|URI"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from .storage import is_uri

        if is_uri(str(value)):
            return str(value)
        return click.Path(exists=True, file_okay=False, path_type=Path).convert(value, param, ctx)  # type: ignore[no-any-return]


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM stop a study cleanly (children stopped, status recorded), even when the
    runner was started with SIGINT ignored (a background job of a non-interactive shell)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    installed = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            installed[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, previous in installed.items():
            signal.signal(sig, previous)


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: child processes on this machine; ray: one Ray task per run.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Runs at once [default: local: CPUs / --cpus-per-run; ray: no cap, every run is submitted "
                   "and Ray queues them by their resources].")
@click.option("--cpus-per-run", type=click.IntRange(min=1), default=1, show_default=True,
              help="CPUs (threads) one run may use; also Ray's num_cpus per task.")
@click.option("--out", default=None, metavar="DIR|URI",
              help="Study directory, or (Ray backend) a URI on any fsspec filesystem: s3://, gs://, file://, ... "
                   "[default: runs/ablations/NAME].")
@click.option("--resume", is_flag=True, help="Continue a study in --out: keep complete runs, redo the rest.")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="Connect to this Ray cluster (e.g. auto, ray://host:10001) instead of starting Ray locally.")
@click.option("--train-command", default=None, metavar="CMD",
              help="Command that trains one run, shell-quoted [default: $LLM_EXPLORER_TRAIN_CMD, else "
                   "'python -m explorer_pipeline train' with this interpreter].")
@click.option("--dry-run", is_flag=True,
              help="Validate the spec and print every run's configuration and command; write and run nothing.")
@click.option("--no-report", is_flag=True, help="Do not write the report at the end.")
@click.option("--emit-jobs", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="FILE",
              help="Write the study directory's configurations and FILE, one command per run (FILE.jsonl: one JSON "
                   "object per run), for a SLURM array or another scheduler; run nothing.")
@click.pass_context
def ablate(ctx: click.Context, spec: Path, backend: str, workers: int | None, cpus_per_run: int, out: str | None,
           resume: bool, ray_address: str | None, train_command: str | None, dry_run: bool, no_report: bool,
           emit_jobs: Path | None) -> None:
    """Run the ablation study SPEC (YAML): every arm x environment x seed, seeds paired across arms.

    Each run is an 'llm-explorer train --config OUT/configs/RUN.yaml' child process writing its
    usual run directory under OUT/runs/. Every arm x environment configuration is validated before
    anything runs. A finished run is never redone; after a crash, SIGKILL or Ctrl-C, --resume
    continues where the study stopped. A failed run is recorded and the study goes on.
    """
    import json
    import shlex

    from explorer_pipeline.errors import UsageError

    from .launch import command_line
    from .runner import jobs_for, plan_study, run_study
    from .spec import load_spec
    from .storage import is_uri

    if ray_address is not None and backend != "ray":
        raise BadInput("--ray-address needs --backend ray")
    command = shlex.split(train_command) if train_command else None
    try:
        study = load_spec(spec)
    except UsageError as exc:
        raise BadInput.from_error(exc) from None
    target: str | Path = (out if is_uri(out) else Path(out)) if out else Path("runs") / "ablations" / study.name
    if is_uri(str(target)) and backend != "ray" and emit_jobs is None and not dry_run:
        raise BadInput(f"--out {target!r} is a URI: a study on fsspec storage needs --backend ray")
    if isinstance(target, Path) and target.exists() and not target.is_dir():
        raise BadInput(f"--out {str(target)!r} is a file; give a directory (or a storage URI)")
    if dry_run:
        runs = plan_study(study, spec)
        here = target if isinstance(target, Path) else Path("STUDY")
        for run, job in zip(runs, jobs_for(runs, here, train_command=command, cpus=cpus_per_run), strict=True):
            click.echo(f"# {run.run_id}: {json.dumps(run.config)}")
            click.echo(command_line(job))
        click.echo(f"{len(runs)} runs; nothing written or run (--dry-run)", err=True)
        return
    if emit_jobs is not None:
        from .runner import emit_jobs as write_jobs

        try:
            count = write_jobs(study, target, emit_jobs, spec_path=spec, resume=resume, cpus=cpus_per_run)
        except UsageError as exc:
            raise BadInput.from_error(exc) from None
        click.echo(f"{count} jobs: {emit_jobs} (configurations in {Path(target) / 'configs'}); "
                   f"then: llm-explorer report {shlex.quote(str(target))}", err=True)
        return
    chosen = _backend(backend, workers, cpus_per_run, ray_address, study, spec)
    try:
        with _stop_signals():
            result = run_study(study, target, chosen, spec_path=spec, resume=resume, train_command=command,
                               echo=lambda line: click.echo(line, err=True))
    except UsageError as exc:
        raise BadInput.from_error(exc) from None
    click.echo(f"{result.done}/{result.total} runs complete, {len(result.failed)} failed "
               f"(this session: {result.wall_s:.0f} s)", err=True)
    if result.interrupted:
        click.echo(f"resume with: llm-explorer ablate {shlex.quote(str(spec))} --out {shlex.quote(str(target))} "
                   "--resume", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    status = EXIT_FAILED if result.failed else 0
    if not no_report and not _write_report(target):
        status = EXIT_FAILED
    ctx.exit(status)


def _backend(name: str, workers: int | None, cpus_per_run: int, ray_address: str | None, study: object,
             spec: Path) -> object:
    from .backends import LocalBackend, RayBackend

    if name == "ray":
        return RayBackend(address=ray_address, workers=workers, cpus_per_run=cpus_per_run,
                          runtime=study.runtime, base_dir=spec.parent)  # type: ignore[attr-defined]
    return LocalBackend(workers=workers, cpus_per_run=cpus_per_run)


def _write_report(out: Path | str) -> bool:
    try:
        files = _report_files(out, None)
    except Exception as exc:  # the study's runs are safe on disk; say what went wrong and how to retry
        click.echo(f"the report could not be written ({type(exc).__name__}: {exc}); "
                   f"retry with: llm-explorer report {out}", err=True)
        return False
    click.echo(f"report: {files.report_md}")
    click.echo(f"summary: {files.summary_csv}")
    return True


def _report_files(out: Path | str, metric: str | None) -> Any:
    """Write the report of the study at ``out``; for a URI from a copy fetched from its storage,
    the report's files then uploaded there (the paths returned are its URIs)."""
    from .report import write_report
    from .storage import local_copy, upload_report

    view = local_copy(out)
    files = write_report(view, metric=metric)
    return upload_report(str(out), view, files) if view != Path(out) else files


@click.command()
@click.argument("directory", type=_StudyArg())
@click.option("--metric", type=click.Choice(METRIC_NAMES), default=None,
              help="Compare arms on the final greedy return, the greedy return averaged over training (auc) or "
                   "the mean training-episode return (train) [default: the spec's metric, else final].")
@click.pass_context
def report(ctx: click.Context, directory: Path | str, metric: str | None) -> None:
    """Write summary.csv, report.md and figures/ for the ablation study in DIRECTORY (or at a
    storage URI: read from it, the report uploaded to it)."""
    from explorer_pipeline.errors import UsageError

    try:
        files: Any = _report_files(directory, metric)
    except UsageError as exc:
        raise BadInput.from_error(exc) from None
    click.echo(f"report: {files.report_md}")
    click.echo(f"summary: {files.summary_csv}")
    for path in files.figures:
        click.echo(f"figure: {path}")


@click.command()
@click.argument("directory", type=_StudyArg())
def status(directory: Path | str) -> None:
    """Show the ablation study in DIRECTORY: runs queued, running (env step, steps/s, LLM updates
    and failures from each run's newest heartbeat), failed and done, and an ETA from steps/s.
    Reads only the study's status.jsonl and study.json (and, for runs without an end in it, their
    summary.json), so it works while a study runs; DIRECTORY may be a storage URI."""
    from explorer_pipeline.errors import UsageError

    from .progress import format_duration, study_state

    try:
        state = study_state(directory)
    except UsageError as exc:
        raise BadInput.from_error(exc) from None
    if not state.runs:
        raise BadInput(f"{str(directory)!r} holds no ablation study (no study.json with runs)")
    counts = state.counts()
    eta = state.eta_s()
    click.echo(f"{len(state.runs)} runs: " + ", ".join(f"{n} {name}" for name, n in counts.items())
               + (f"; ETA {format_duration(eta)}" if eta is not None and state.active else "")
               + ("" if state.active else " (no session running)"))
    for run in state.runs.values():
        if run.state == "running":
            beat = run.beat
            where = f" on {run.host}" if run.host else ""
            again = f", attempt {run.attempt}" if run.attempt > 1 else ""
            if beat:
                speed = beat.get("steps_per_s")
                click.echo(f"  running {run.run_id}{where}{again}: step {beat.get('step')}/{beat.get('steps') or '?'}, "
                           f"{'?' if speed is None else speed} steps/s, {beat.get('updates', 0)} LLM updates, "
                           f"{beat.get('llm_failures', 0)} LLM failures")
            else:
                click.echo(f"  running {run.run_id}{where}{again}: no heartbeat yet")
        elif run.state == "failed":
            last = run.error.strip().splitlines()[-1] if run.error.strip() else "no output"
            click.echo(f"  failed {run.run_id}: {last}")
