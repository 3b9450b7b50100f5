"""Typer command functions registered by ``ephys2tx.cli``."""
