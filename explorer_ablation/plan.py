"""Expanding a spec into runs (arms x environments x seeds) and each run's configuration.

Every run receives one run-configuration document (:func:`.spec.run_document`): ``env`` and
``seed``, then the base's and the arm's settings with ``RunConfig``'s nested keys. The runner
writes it to ``OUT/configs/ARM__ENV__seed-S.yaml`` before the run starts, and the run is
``llm-explorer train --config FILE --out DIR``; the run directory's ``config.yaml`` then holds
it resolved.

Seeds are paired: every arm gets the same ``seed`` for the same environment, so arms differ
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

import yaml

from .spec import SHORTCUTS, StudySpec, run_document

__all__ = ["PlannedRun", "env_slug", "expand"]


@dataclass(frozen=True)
class PlannedRun:
    """One run of the study.

    :param config: the run-configuration document (paths already absolute) that
        ``llm-explorer train --config`` reads.
    :param resources: what the run asks the cluster for (``num_cpus``, ``num_gpus``,
        ``memory_gb``; unset ones left out). Not part of the fingerprint.
    """

    arm: str
    env: str
    seed: int
    config: dict[str, Any] = field(compare=False)
    resources: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def run_id(self) -> str:
        """``ARM/ENV/seed-S``: names the run in logs, ``status.jsonl`` and ``study.json``."""
        return f"{self.arm}/{self.env}/seed-{self.seed}"

    @property
    def relpath(self) -> Path:
        """Where the run directory lives inside the study directory."""
        return Path("runs") / self.arm / env_slug(self.env) / f"seed-{self.seed}"

    @property
    def log_relpath(self) -> Path:
        """The train command's stdout and stderr, outside the run directory."""
        return Path("logs") / f"{self._stem}.log"

    @property
    def config_relpath(self) -> Path:
        """The run's configuration file inside the study directory."""
        return Path("configs") / f"{self._stem}.yaml"

    @property
    def _stem(self) -> str:
        return f"{self.arm}__{env_slug(self.env)}__seed-{self.seed}"

    @property
    def settings(self) -> dict[str, Any]:
        """The document seen through the spec's shortcut names (``steps``, ``provider``,
        ``model``, ``k``, ...): what the report shows and prices by. Unset ones are left out."""
        out: dict[str, Any] = {}
        for name, path in SHORTCUTS.items():
            node: Any = self.config
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                out[name] = node
        return out

    @property
    def steps(self) -> int | None:
        """Env steps the run must reach to be complete; None when the preset decides."""
        steps = self.config.get("steps")
        return steps if isinstance(steps, int) and not isinstance(steps, bool) else None

    def arguments(self, study_dir: Path) -> list[str]:
        """The arguments after ``llm-explorer train`` for this run of the study in ``study_dir``."""
        return ["--config", str(study_dir / self.config_relpath), "--out", str(study_dir / self.relpath)]

    def config_yaml(self, study: str = "") -> str:
        """The configuration file's text."""
        head = f"# run {self.run_id}" + (f" of ablation study {study!r}" if study else "")
        head += "; written by llm-explorer ablate (edit the spec, not this file)\n"
        return head + yaml.safe_dump(self.config, sort_keys=False, default_flow_style=False, width=100)

    @property
    def fingerprint(self) -> str:
        """Changes whenever anything in the run's configuration changes."""
        blob = json.dumps(self.config, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        """The run's entry in ``study.json``."""
        return {"arm": self.arm, "env": self.env, "seed": self.seed, "settings": self.settings, "config": self.config,
                "config_file": str(self.config_relpath), "dir": str(self.relpath), "log": str(self.log_relpath),
                "fingerprint": self.fingerprint}


def env_slug(env_id: str) -> str:
    """A directory name for an environment id (``ALE/Pong-v5`` -> ``ALE_Pong-v5``)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", env_id)


def expand(spec: StudySpec, base_dir: Path | None = None) -> list[PlannedRun]:
    """Every run of ``spec``; relative paths in configurations are resolved against ``base_dir``
    (the spec file's directory)."""
    base_dir = (base_dir or Path.cwd()).resolve()
    return [
        PlannedRun(arm=arm.name, env=env.id, seed=seed, config=run_document(spec, arm, j, seed, base_dir).data,
                   resources=spec.resources_of(arm).model_dump(exclude_none=True))
        for seed in spec.seeds
        for j, env in enumerate(spec.environments)
        for arm in spec.arms
    ]
