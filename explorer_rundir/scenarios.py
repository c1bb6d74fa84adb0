"""The scenario-set format (version 1): what ``llm-explorer scenarios`` writes and
``llm-explorer eval-advice`` reads. Defined once here; nothing here imports torch.

A scenario set is a directory::

    SET_DIR/
      scenarios.json            manifest, written last (its presence marks a complete set)
      config.yaml               the recorded run's resolved configuration
      reference/networks.pt     the reference: the whole algorithm's state_dict (torch.save)
      scenario-000/
        record.json             the episode record and history the pipeline would have seen
        arrays.npz              the states visited next and the reference's values on them
        networks.pt             the learner's policy at the snapshot (state_dict)
      scenario-001/ ...

``arrays.npz`` holds ``states`` (N x obs) for every set, and per action kind:

* discrete: ``q_ref`` (N x n): the reference's Q-values of every action in every state;
* continuous: ``pi`` (N x n, the learner's action, normalised units), ``pi_ref`` (N x n, the
  reference's action), ``q_pi`` (N, Q_ref(s, pi(s))) and ``spread`` (N, the standard deviation of
  Q_ref(s, a) over uniformly drawn actions a). Q_ref at other actions comes from the reference
  networks when a set is scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explorer_pipeline.errors import UsageError
from explorer_pipeline.types import ActionSpec, EpisodeRecord

from .format import read_json

__all__ = ["FORMAT", "MANIFEST", "VERSION", "Scenario", "ScenarioSet", "ScenarioSetError", "load_set",
           "record_from_json", "record_to_json", "spec_from_json", "spec_to_json"]

FORMAT = "llm-explorer-scenarios"
VERSION = 1
MANIFEST = "scenarios.json"
CONFIG = "config.yaml"
REFERENCE_NETWORKS = "reference/networks.pt"
RECORD = "record.json"
ARRAYS = "arrays.npz"
NETWORKS = "networks.pt"

DISCRETE_ARRAYS = ("states", "q_ref")
CONTINUOUS_ARRAYS = ("states", "pi", "pi_ref", "q_pi", "spread")


class ScenarioSetError(UsageError):
    """A directory that is not a usable scenario set (exit status 2)."""


def spec_to_json(spec: ActionSpec) -> dict[str, Any]:
    """The action spec as the manifest stores it."""
    return {"kind": spec.kind.value, "n": spec.n, "labels": list(spec.labels), "low": list(spec.low),
            "high": list(spec.high)}


def spec_from_json(data: dict[str, Any]) -> ActionSpec:
    """The inverse of :func:`spec_to_json`."""
    if data["kind"] == "discrete":
        return ActionSpec.discrete(int(data["n"]), data["labels"])
    return ActionSpec.continuous(data["low"], data["high"], data["labels"])


def record_to_json(record: EpisodeRecord) -> dict[str, Any]:
    """An episode record as JSON (continuous actions as lists)."""
    return {"episode_return": record.episode_return, "length": record.length, "env_id": record.env_id,
            "episode_index": record.episode_index, "env_step": record.env_step,
            "actions": [list(a) if isinstance(a, tuple | list) else a for a in record.actions]}


def record_from_json(data: dict[str, Any]) -> EpisodeRecord:
    """The inverse of :func:`record_to_json`."""
    actions = tuple(tuple(a) if isinstance(a, list) else a for a in data.get("actions", ()))
    return EpisodeRecord(float(data["episode_return"]), int(data["length"]), str(data["env_id"]),
                         int(data["episode_index"]), actions, int(data.get("env_step", 0)))


@dataclass(frozen=True)
class Scenario:
    """One snapshot of learning: what the pipeline is shown, and where its advice is scored."""

    id: str
    step: int
    record: EpisodeRecord
    history: tuple[EpisodeRecord, ...]
    arrays: dict[str, np.ndarray]


@dataclass(frozen=True)
class ScenarioSet:
    """A loaded scenario set."""

    path: Path
    manifest: dict[str, Any]
    spec: ActionSpec
    scenarios: tuple[Scenario, ...]

    @property
    def env_id(self) -> str:
        """The gymnasium id the set was recorded on."""
        return str(self.manifest["env_id"])

    @property
    def name(self) -> str:
        """A short name for tables: ``env_id/algo``."""
        return f"{self.env_id}/{self.manifest.get('algo', '?')}"


def load_set(path: str | Path, *, limit: int | None = None) -> ScenarioSet:
    """Read the scenario set at ``path`` (at most ``limit`` scenarios, in order).

    Raises :class:`ScenarioSetError` naming the first problem: no manifest, another format or
    version, a missing reference or scenario file, arrays of the wrong shape."""
    path = Path(path)
    manifest = read_json(path / MANIFEST)
    if not isinstance(manifest, dict):
        raise ScenarioSetError(f"{str(path)!r} is not a scenario set: {MANIFEST} is missing or not JSON "
                               f"(write one with: llm-explorer scenarios RUN_DIR --out {path})")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ScenarioSetError(f"{str(path / MANIFEST)!r}: format {manifest.get('format')!r} version "
                               f"{manifest.get('version')!r}; this version reads {FORMAT!r} version {VERSION}")
    if not (path / REFERENCE_NETWORKS).is_file() or not (path / CONFIG).is_file():
        raise ScenarioSetError(f"{str(path)!r}: the reference is missing ({REFERENCE_NETWORKS} and {CONFIG} "
                               f"are both needed)")
    spec = spec_from_json(manifest["action_spec"])
    names = DISCRETE_ARRAYS if spec.is_discrete else CONTINUOUS_ARRAYS
    scenarios = []
    for entry in manifest.get("scenarios", [])[:limit]:
        folder = path / entry["id"]
        try:
            recorded = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            with np.load(folder / ARRAYS) as npz:
                arrays = {name: np.asarray(npz[name], dtype=np.float64) for name in names}
        except (OSError, ValueError, KeyError) as exc:
            raise ScenarioSetError(f"{str(folder)!r}: cannot be read ({type(exc).__name__}: {exc})") from None
        n_states = len(arrays["states"])
        for name in names[1:]:
            if len(arrays[name]) != n_states:
                raise ScenarioSetError(f"{str(folder / ARRAYS)!r}: {name} has {len(arrays[name])} rows, "
                                       f"states has {n_states}")
        if spec.is_discrete and arrays["q_ref"].shape[1:] != (spec.n,):
            raise ScenarioSetError(f"{str(folder / ARRAYS)!r}: q_ref has shape {arrays['q_ref'].shape}, "
                                   f"expected (N, {spec.n})")
        scenarios.append(Scenario(entry["id"], int(entry["step"]), record_from_json(recorded["record"]),
                                  tuple(record_from_json(h) for h in recorded["history"]), arrays))
    if not scenarios:
        raise ScenarioSetError(f"{str(path)!r}: the set holds no scenario")
    return ScenarioSet(path, manifest, spec, tuple(scenarios))
