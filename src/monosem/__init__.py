"""monosem: engineering and measuring monosemanticity in toy models (Jermyn, Schiefer & Hubinger 2022)."""

__version__ = "0.1.0"
