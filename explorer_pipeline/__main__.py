"""``python -m explorer_pipeline``: the ``llm-explorer`` command line."""

from .cli import main

main()
