"""``llm-explorer scenarios`` and ``llm-explorer eval-advice``: score advice offline.

Loading this module imports click only; Tianshou, torch and the pipeline load when a command runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from explorer_pipeline.errors import BadInput

#: the built-in scenario sets: (env, algo, training steps, checkpoint every N steps)
BUILTIN_SETS = (("CartPole-v1", "dqn", 24000, 1000), ("Pendulum-v1", "td3", 12000, 500))


def _fresh(out: Path, flag: str = "--out") -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"{flag} {str(out)!r} is not empty; give a new directory")


def _builtin(out: Path, episodes: int, max_states: int, seed: int) -> None:
    from tianshou_integration.config import make_config
    from tianshou_integration.experiment import run_experiment
    from tianshou_integration.scenarios import record_scenarios

    for env_id, algo, steps, every in BUILTIN_SETS:
        name = f"{env_id}-{algo}"
        config = make_config(env_id, algo, {"steps": steps, "seed": seed, "explorer.provider": "none",
                                            "checkpoint.every_steps": every, "checkpoint.every_minutes": None,
                                            "checkpoint.keep": 1000, "checkpoint.include_buffer": "never"})
        click.echo(f"training {algo} on {env_id} for {steps} steps (checkpoint every {every}) -> {out / 'runs' / name}",
                   err=True)
        run_experiment(config, out / "runs" / name, progress=False)
        record_scenarios(out / "runs" / name, out / name, episodes=episodes, max_states=max_states, seed=seed,
                         echo=lambda line: click.echo(line, err=True))
        click.echo(f"scenario set: {out / name}")


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="The new scenario-set directory.")
@click.option("--builtin", is_flag=True,
              help="Train and record the built-in sets (CartPole-v1 with dqn, Pendulum-v1 with td3) into "
                   "OUT/<env>-<algo>, their runs into OUT/runs/; reproducible for a seed.")
@click.option("--episodes", default=3, show_default=True, type=click.IntRange(1, 100),
              help="Episodes the learner plays from each snapshot (with its exploration) for the visited states.")
@click.option("--max-states", default=256, show_default=True, type=click.IntRange(1, 100000),
              help="Visited states kept per scenario (evenly spaced).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the rollouts (and of --builtin training).")
def scenarios(run_dir: Path | None, out: Path, builtin: bool, episodes: int, max_states: int, seed: int) -> None:
    """Record a scenario set from RUN_DIR, a training run with checkpoints: each checkpoint but the
    newest is a scenario (the last episode and recent returns, the states the learner visits over
    its next episodes, its policy); the newest is the reference that scores advice.

    Train a run for it with, e.g., --set checkpoint.every_steps=1000 --set checkpoint.keep=100.
    """
    from explorer_pipeline.errors import UsageError

    if builtin == (run_dir is not None):
        raise BadInput("give either RUN_DIR or --builtin")
    _fresh(out)
    try:
        if builtin:
            _builtin(out, episodes, max_states, seed)
            return
        from tianshou_integration.scenarios import record_scenarios

        manifest = record_scenarios(run_dir, out, episodes=episodes, max_states=max_states, seed=seed,
                                    echo=lambda line: click.echo(line, err=True))
    except UsageError as exc:
        raise BadInput.from_error(exc) from None
    click.echo(f"{len(manifest['scenarios'])} scenarios of {manifest['env_id']} ({manifest['algo']}), reference at "
               f"env step {manifest['reference']['step']}: {out}")


@click.command("eval-advice")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("scenario_sets", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New directory for the results.")
@click.option("--arm", "arms", multiple=True, metavar="NAME", help="Score only this arm of SPEC (repeatable).")
@click.option("--controls", is_flag=True,
              help="Also score five graded controls built from the reference (best, good, none, bad, worst).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Score at most this many scenarios per set.")
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Requests in flight per arm (within the provider's own rate limits).")
@click.option("--response-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite response cache for arms that set none [default: OUT/responses.sqlite].")
def eval_advice(spec: Path, scenario_sets: tuple[Path, ...], out: Path, arms: tuple[str, ...], controls: bool,
                limit: int | None, concurrency: int, response_cache: Path | None) -> None:
    """Score the arms of the ablation SPEC offline on SCENARIO_SETS: only their pipeline stages run
    (summariser, analyser, proposer, validator), once per scenario, and each update is scored
    against the set's reference. Writes results.json, scores.csv, table.md and scores.png to OUT."""
    from explorer_pipeline.errors import UsageError
    from explorer_rundir.scenarios import load_set

    from ..spec import load_spec
    from .evaluate import plan_arms, run_arm
    from .summary import summarise, write_outputs

    _fresh(out)
    started = time.perf_counter()
    references = []
    try:
        study = load_spec(spec, names=False)
        sets = [load_set(path, limit=limit) for path in scenario_sets]
        plans = plan_arms(study, spec, sets, out, arms=arms, controls=controls,
                          response_cache=response_cache or out / "responses.sqlite")
        out.mkdir(parents=True, exist_ok=True)
        outcomes = []
        for sset in sets:
            q_ref = None
            if not sset.spec.is_discrete:
                from tianshou_integration.scenarios import load_reference

                reference = load_reference(sset.path)
                references.append(reference)
                q_ref = reference.q
            for plan in plans[sset.name]:
                t0 = time.perf_counter()
                done = run_arm(plan, sset, q_ref=q_ref, concurrency=concurrency)
                failed = sum(o.failure is not None for o in done)
                click.echo(f"{sset.name} {plan.name}: {len(done) - failed}/{len(done)} scored "
                           f"({time.perf_counter() - t0:.1f} s)", err=True)
                outcomes += done
    except UsageError as exc:
        raise BadInput.from_error(exc) from None
    finally:
        for reference in references:
            reference.close()
    summary = summarise(outcomes)
    wall = time.perf_counter() - started
    write_outputs(out, outcomes, summary, {"spec": str(spec), "sets": [str(p) for p in scenario_sets],
                                           "wall_s": round(wall, 2), "concurrency": concurrency})
    from .summary import table

    click.echo(table(summary), nl=False)
    click.echo(f"results: {out / 'results.json'}; figure: {out / 'scores.png'} ({wall:.0f} s)", err=True)
