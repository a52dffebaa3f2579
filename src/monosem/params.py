"""Params as every stage reads them: `config`'s schema, checked against the registered model kinds
(`monosem.toy.families`, plugins included) and SAE architectures (`monosem.sae.registry`).

`config` sits at the bottom and knows neither registry; this module sits above both, so the check needs no
import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monosem.config import Params, read_yaml
from monosem.config import parse_params as parse_schema
from monosem.toy import families


class Registered:
    """The `config.Registry` of what is registered now."""

    def family(self, kind: str) -> families.Family:
        return families.family(kind)

    def kinds(self) -> list[str]:
        return sorted(families.FAMILIES)

    def architecture(self, name: str) -> Any:
        from monosem.sae.registry import architecture  # imported when a params file names one: it brings torch

        return architecture(name)


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate a params mapping; `ParamsError` with one line for the first problem."""
    return parse_schema(raw, source, Registered())


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_yaml(path), str(path))
