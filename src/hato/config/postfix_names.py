"""The names of every Postfix 3.7 parameter, so that hato can tell "a Postfix
parameter hato does not implement" (named by ``hato check``) from "a name that
nothing uses" (a typo)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def postfix_parameter_names() -> frozenset[str]:
    text = resources.files("hato.config").joinpath("postfix_parameters.txt").read_text("ascii")
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))
