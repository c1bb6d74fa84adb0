"""Ablation studies: a YAML spec of arms x environments x seeds, run as ``llm-explorer train``
child processes (locally or on Ray), then summarised with interval estimates.

Modules: :mod:`.spec` (the YAML spec), :mod:`.plan` (runs and their train arguments),
:mod:`.runner` (running a study, resuming), :mod:`.backends` (local processes, Ray),
:mod:`.launch` (one child process), :mod:`.state` (the study directory on disk),
:mod:`.results` / :mod:`.stats` / :mod:`.figures` / :mod:`.report` (the report), :mod:`.cli`.

Nothing here imports torch, tianshou or the training code; Ray is imported only by the Ray
backend, when it runs.
"""
