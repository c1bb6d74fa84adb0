"""Expanding a spec into runs (arms x environments x seeds) and each run's ``train`` arguments.

Seeds are paired: every arm gets the same ``--seed`` for the same environment, so arms differ
only in what the spec says. Runs are ordered seed by seed, then environment, then arm, so a study
stopped half-way holds comparable runs of every arm.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import StudySpec

__all__ = ["FLAGS", "PlannedRun", "expand", "train_arguments"]

#: spec field -> ``llm-explorer train`` option. ``options`` and ``replay`` are handled apart.
FLAGS: dict[str, str] = {
    "algo": "--algo",
    "steps": "--steps",
    "provider": "--provider",
    "model": "--model",
    "base_url": "--base-url",
    "prompt_set": "--prompt-set",
    "k": "--k",
    "m": "--m",
    "temperature": "--temperature",
    "mode": "--mode",
    "task_description": "--task-description",
    "eval_episodes": "--eval-episodes",
    "sigma": "--sigma",
    "response_cache": "--response-cache",
}
_PATH_FIELDS = ("response_cache",)


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study.

    :param settings: the resolved ``RunSettings`` values (paths already absolute).
    """

    arm: str
    env: str
    seed: int
    settings: dict[str, Any] = field(compare=False)

    @property
    def run_id(self) -> str:
        return f"{self.arm}/{self.env}/seed-{self.seed}"

    @property
    def relpath(self) -> Path:
        """Where the run directory lives inside the study directory."""
        return Path("runs") / self.arm / env_slug(self.env) / f"seed-{self.seed}"

    @property
    def log_relpath(self) -> Path:
        """The train command's stdout and stderr, outside the run directory."""
        return Path("logs") / f"{self.arm}__{env_slug(self.env)}__seed-{self.seed}.log"

    def arguments(self, out_dir: Path) -> list[str]:
        return train_arguments(self.env, self.seed, self.settings, out_dir)

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything that affects the run's result changes."""
        blob = json.dumps({"env": self.env, "seed": self.seed, "settings": self.settings},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {"arm": self.arm, "env": self.env, "seed": self.seed, "settings": self.settings,
                "dir": str(self.relpath), "log": str(self.log_relpath), "fingerprint": self.fingerprint}


def env_slug(env_id: str) -> str:
    """A directory name for an environment id (``ALE/Pong-v5`` -> ``ALE_Pong-v5``)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", env_id)


def expand(spec: StudySpec, base_dir: Path | None = None) -> list[PlannedRun]:
    """Every run of ``spec``; relative paths in settings are resolved against ``base_dir`` (the
    spec file's directory)."""
    base_dir = (base_dir or Path.cwd()).resolve()
    per_arm = {arm.name: _absolute(spec.settings(arm), base_dir) for arm in spec.arms}
    return [
        PlannedRun(arm=arm.name, env=env.id, seed=seed, settings=per_arm[arm.name])
        for seed in spec.seeds
        for env in spec.environments
        for arm in spec.arms
    ]


def _absolute(settings: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    out = dict(settings)
    for name in _PATH_FIELDS:
        if name in out:
            out[name] = str((base_dir / out[name]).resolve())
    text = out.get("task_description")
    if isinstance(text, str) and text.startswith("@"):
        out["task_description"] = "@" + str((base_dir / text[1:]).resolve())
    return out


def train_arguments(env: str, seed: int, settings: dict[str, Any], out_dir: Path) -> list[str]:
    """The arguments after ``llm-explorer train``."""
    args = ["--env", env, "--seed", str(seed)]
    for name, flag in FLAGS.items():
        if name in settings:
            args += [flag, _text(settings[name])]
    for key, value in settings.get("options", {}).items():
        args += ["--option", f"{key}={_text(value)}"]
    if settings.get("replay"):
        args.append("--replay")
    args += ["--out", str(out_dir)]
    return args


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
