"""GBNF grammars for stage-2 answers, generated from the action spec."""

from __future__ import annotations

from explorer_pipeline.types import ActionSpec


def proposal_grammar(spec: ActionSpec) -> str:
    """``{"probabilities": [p, ...]}`` with exactly ``spec.n`` numbers in [0, 1], or
    ``{"bias": [b, ...]}`` with numbers in [-1, 1]. The validator still renormalises."""
    key = "probabilities" if spec.is_discrete else "bias"
    sign = "" if spec.is_discrete else '"-"? '
    items = " \", \" ".join(["num"] * spec.n)
    return (
        f'root ::= "{{\\"{key}\\": [" {items} "]}}"\n'
        f'num ::= {sign}("0." [0-9] [0-9]? | "1.0")\n'
    )
