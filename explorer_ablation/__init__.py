"""Ablation studies of LLM-Explorer: a YAML spec of arms x environments x seeds, run as
``llm-explorer train`` child processes (locally or on Ray), then summarised with interval
estimates.

This package sits outside the core pipeline (``explorer_pipeline``) and adds its commands,
``ablate`` and ``report``, through the ``register_commands`` hook (:mod:`.plugin`).

Modules: :mod:`.spec` (the YAML spec), :mod:`.plan` (runs and their configurations),
:mod:`.runner` (running a study, resuming), :mod:`.backends` (local processes, Ray),
:mod:`.launch` (one child process), :mod:`.state` (the study directory on disk),
:mod:`.results` / :mod:`.stats` / :mod:`.figures` / :mod:`.report` (the report), :mod:`.cli`.

Nothing here imports torch or the training code. Validating a spec resolves each run's
configuration with ``tianshou_integration.config`` and looks environments up in gymnasium,
both imported only when a spec is checked; Ray is imported only by the Ray backend, when it
runs. Run directories are read through :mod:`explorer_rundir.format`.
"""
