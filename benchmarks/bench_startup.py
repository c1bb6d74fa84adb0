"""Start-up of ``llm-explorer train --provider none``: from the command to the first env step.

Each repeat starts ``python -m explorer_pipeline train --env bench_startup:StartupProbe-v0 --algo dqn
--provider none`` in a fresh process. The probe environment (CartPole, registered when gymnasium
imports this module for the ``module:EnvId`` id) records, at its first ``step``, the wall-clock time,
the process's CPU time (user + system, ``resource.getrusage``) and whether LangChain is loaded, then
ends the process. Wall time is from just before the process is started; on a loaded machine the
CPU time is the steadier number.

    nice -n 10 .venv/bin/python benchmarks/bench_startup.py --repeats 5
    # two versions side by side: export each and put it first on the path
    git archive COMMIT | tar -x -C /tmp/before
    nice -n 10 .venv/bin/python benchmarks/bench_startup.py --repeats 5 --code /tmp/before --code /tmp/after

With ``--code DIR`` the packages (and the first-party plugins under ``DIR/plugins``) are imported
from ``DIR``; repeats alternate between the variants given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def _register_probe() -> None:
    import gymnasium
    from gymnasium.envs.classic_control import CartPoleEnv

    class StartupProbe(CartPoleEnv):  # type: ignore[misc]
        def step(self, action):  # type: ignore[no-untyped-def]
            usage = resource.getrusage(resource.RUSAGE_SELF)
            record = {"t": time.time(), "cpu_s": usage.ru_utime + usage.ru_stime,
                      "langchain": "langchain_core" in sys.modules,
                      "providers": "explorer_pipeline.providers" in sys.modules,
                      "modules": len(sys.modules)}
            with open(os.environ["STARTUP_PROBE_OUT"], "w", encoding="utf-8") as f:
                json.dump(record, f)
            os._exit(0)

    gymnasium.register("StartupProbe-v0", entry_point=StartupProbe, max_episode_steps=500)


if __name__ != "__main__" and "STARTUP_PROBE_OUT" in os.environ:
    _register_probe()


def one_start(code: Path) -> dict[str, float | bool]:
    """One ``train --provider none`` start with the packages of ``code``; the probe's record."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        paths = [HERE, code, code / "plugins" / "openai", code / "plugins" / "llamacpp"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths)), "STARTUP_PROBE_OUT": str(out)}
        command = [sys.executable, "-m", "explorer_pipeline", "train", "--env", "bench_startup:StartupProbe-v0",
                   "--algo", "dqn", "--provider", "none", "--steps", "1000", "--out", str(Path(tmp) / "run")]
        start = time.time()
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=600, check=False)
        if not out.exists():
            raise SystemExit(f"no env step recorded (exit {done.returncode}):\n{done.stderr[-2000:]}")
        record = json.loads(out.read_text(encoding="utf-8"))
        return {"wall_s": record["t"] - start, "cpu_s": record["cpu_s"], "langchain": record["langchain"],
                "providers": record["providers"], "modules": record["modules"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--code", type=Path, action="append", default=None,
                        help="a checkout whose packages to import (repeatable; default: this one)")
    args = parser.parse_args()
    variants = [path.resolve() for path in (args.code or [ROOT])]
    results: dict[Path, list[dict[str, float | bool]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant in variants:  # interleaved: the machine's load hits every variant alike
            results[variant].append(one_start(variant))
    for variant, rows in results.items():
        wall = statistics.median(float(r["wall_s"]) for r in rows)
        cpu = statistics.median(float(r["cpu_s"]) for r in rows)
        print(f"{variant}: median of {len(rows)}: {wall:.2f} s wall, {cpu:.2f} s CPU to the first env step; "
              f"LangChain loaded: {rows[0]['langchain']}, provider layer loaded: {rows[0]['providers']}, "
              f"{rows[0]['modules']} modules")
        print("  wall:", " ".join(f"{float(r['wall_s']):.2f}" for r in rows),
              " cpu:", " ".join(f"{float(r['cpu_s']):.2f}" for r in rows))


if __name__ == "__main__":
    main()
