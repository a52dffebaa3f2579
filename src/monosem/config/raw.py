"""The params mapping as read from YAML, before validation: `defaults` merged in, and where a value sits in it
(for the one-line errors of `config.parse_params`)."""

from __future__ import annotations

from typing import Any

SECTIONS = ("worlds", "studies", "saes")  # the sections whose entries `defaults.<section>` fills in


def where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def lookup(raw: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            raw = raw[part]
        except (KeyError, IndexError, TypeError):
            return "<missing>"
    return raw


def merged(base: Any, own: Any) -> Any:
    """`own` over `base`: mappings merged key by key (recursively); anything else, lists included, replaced."""
    if not (isinstance(base, dict) and isinstance(own, dict)):
        return own
    return base | {k: merged(base[k], v) if k in base else v for k, v in own.items()}


def with_defaults(raw: Any) -> Any:
    """The params mapping with `defaults.<section>` merged under every entry of that section (worlds, studies,
    saes): params.yaml spells out per study only what differs, and DVC's tables get a column per leaf."""
    if not isinstance(raw, dict) or not isinstance(raw.get("defaults"), dict):
        return raw
    out = dict(raw)
    for section in SECTIONS:
        base = raw["defaults"].get(section)
        if isinstance(base, dict) and base and isinstance(raw.get(section), dict):
            out[section] = {name: merged(base, entry) for name, entry in raw[section].items()}
    return out


def inherited_from(raw: Any, loc: tuple) -> str:
    """" (from defaults.<section>.<key>)" where the value at `loc` came from defaults, not from its entry."""
    if len(loc) > 2 and loc[0] in SECTIONS and lookup(raw, loc) == "<missing>":
        if lookup(raw, ("defaults", loc[0], *loc[2:])) != "<missing>":
            return f" (from {where(('defaults', loc[0], *loc[2:]))})"
    return ""
