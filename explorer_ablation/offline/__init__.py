"""Offline evaluation of advice: scenario sets recorded from training runs, and the pipeline
stages of each arm scored against a trained reference (``llm-explorer scenarios`` and
``llm-explorer eval-advice``; docs/offline-eval.md). Nothing here imports torch at import time:
the Tianshou side (:mod:`tianshou_integration.scenarios`) loads when a command needs networks."""
