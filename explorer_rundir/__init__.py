"""The run directory's file formats: what the training side writes and the ablation/offline side reads.

:mod:`explorer_rundir.format` names a run directory's files (``config.json``, ``metrics.csv``,
``updates.jsonl``, ``summary.json``, ...) and reads and writes them atomically;
:mod:`explorer_rundir.scenarios` is the file format of a scenario set (frozen episodes for offline
evaluation); :mod:`explorer_rundir.informativeness` defines the informativeness measures computed
from a run's records. The core pipeline imports none of these. This package may import
``explorer_pipeline``'s contracts (types, errors) but never torch, Tianshou or gymnasium (a test
checks it).
"""
