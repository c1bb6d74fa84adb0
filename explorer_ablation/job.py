"""One run of a study as a stand-alone job: ``python -m explorer_ablation.job --config FILE --out DIR``.

This is the command ``llm-explorer ablate --emit-jobs`` writes for each run, for SLURM arrays or
any other scheduler. It behaves like a run of the ablation runner: a complete run directory is
left alone (exit 0), a half-finished one with a checkpoint continues (``train --resume``), any
other half-written one is moved aside and started again. SIGTERM or SIGINT (a preemption,
``scancel``) reaches ``train`` as SIGTERM: it writes a checkpoint and the job exits 1, and the
same line run again continues the run. The train command is ``LLM_EXPLORER_TRAIN_CMD`` if set.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from explorer_rundir.format import run_is_complete

from . import launch
from .launch import Job

__all__ = ["main"]

STOP_GRACE_S = 120.0


def main(argv: list[str] | None = None) -> int:
    """Run one job; the exit status is 0 when the run directory is complete."""
    parser = argparse.ArgumentParser(prog="python -m explorer_ablation.job", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the run's configuration file")
    parser.add_argument("--out", required=True, help="the run directory")
    parser.add_argument("--log", required=True, help="where the train command's output goes (appended)")
    parser.add_argument("--steps", type=int, default=None, help="env steps a complete run has")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS and friends, unless set")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    job = Job(run_id=str(out), arguments=("--config", str(Path(args.config).resolve()), "--out", str(out)),
              run_dir=out, log_path=Path(args.log).resolve(), steps=args.steps, cpus=max(1, args.threads))
    if run_is_complete(out, args.steps):
        sys.stderr.write(f"{out} is already complete\n")
        return 0

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    started = launch.start(job)
    try:
        started.process.wait()
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        launch.stop(started, grace_s=STOP_GRACE_S, sig=signal.SIGTERM)
        outcome = launch.finish(started, interrupted=True)
        sys.stderr.write(f"stopped; run the same command again to continue {out}\n")
        return 0 if outcome.complete else 1
    outcome = launch.finish(started)
    if not outcome.complete:
        sys.stderr.write(outcome.error + "\n")
        return outcome.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
